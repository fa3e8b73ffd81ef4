-- headers: adds, sets or removes request headers (before the request goes
-- upstream) and response headers (before the response goes to the client).
--   config: {"request":  {"set": {"X-A": "1"}, "add": {"X-B": "2"}, "remove": ["X-C"]},
--            "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}}
local function apply(conf, set, add, remove)
  if not conf then return end
  for _, name in ipairs(conf.remove or {}) do remove(name) end
  for name, value in pairs(conf.set or {}) do set(name, tostring(value)) end
  for name, value in pairs(conf.add or {}) do add(name, tostring(value)) end
end

return {
  upstream_request = function(req, conf)
    apply(conf.request,
      function(n, v) req:set_header(n, v) end,
      function(n, v) req:add_header(n, v) end,
      function(n) req:remove_header(n) end)
  end,
  response = function(req, conf)
    apply(conf.response,
      function(n, v) req:set_resp_header(n, v) end,
      function(n, v) req:add_resp_header(n, v) end,
      function(n) req:remove_resp_header(n) end)
  end,
}
