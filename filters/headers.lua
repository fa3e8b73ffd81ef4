-- headers: adds, sets or removes request headers (before the request goes
-- upstream) and response headers (before the response goes to the client).
--   config: {"request":  {"set": {"X-A": "1"}, "add": {"X-B": "2"}, "remove": ["X-C"]},
--            "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}}
local function apply(req, conf, set, add, remove)
  if conf.remove then for _, name in ipairs(conf.remove) do remove(req, name) end end
  if conf.set then for name, value in pairs(conf.set) do set(req, name, tostring(value)) end end
  if conf.add then for name, value in pairs(conf.add) do add(req, name, tostring(value)) end end
end

return {
  phases = function(conf)
    return { conf.request and "upstream_request" or nil, conf.response and "response" or nil }
  end,
  upstream_request = function(req, conf)
    if conf.request then apply(req, conf.request, req.set_header, req.add_header, req.remove_header) end
  end,
  response = function(req, conf)
    if conf.response then apply(req, conf.response, req.set_resp_header, req.add_resp_header, req.remove_resp_header) end
  end,
}
