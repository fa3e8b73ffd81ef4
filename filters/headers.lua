-- headers: adds, sets or removes request headers (before the request goes
-- upstream) and response headers (before the response goes to the client).
--   config: {"request":  {"set": {"X-A": "1"}, "add": {"X-B": "2"}, "remove": ["X-C"]},
--            "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}}
-- Removals apply first, then sets, then adds.
local REMOVE, SET, ADD = 1, 2, 3

-- Once per route: one flat list of (operation, name, value) for each side.
local function compile(section, side)
  if section == nil then return nil end
  if type(section) ~= "table" then error("headers: '" .. side .. "' must be an object", 0) end
  local ops = {}
  local function op(kind, name, value)
    if type(name) ~= "string" or not name:match("^[!#$%%&'*+.^_`|~%w-]+$") then
      error("headers: " .. side .. ": '" .. tostring(name) .. "' is not a header name", 0)
    end
    if kind ~= REMOVE and type(value) ~= "string" and type(value) ~= "number" then
      error("headers: " .. side .. ": the value of " .. name .. " must be a string or a number", 0)
    end
    ops[#ops + 1] = kind; ops[#ops + 1] = name; ops[#ops + 1] = kind ~= REMOVE and tostring(value) or false
  end
  for _, name in ipairs(section.remove or {}) do op(REMOVE, name) end
  for name, value in pairs(section.set or {}) do op(SET, name, value) end
  for name, value in pairs(section.add or {}) do op(ADD, name, value) end
  return ops
end

local function apply(req, ops, set, add, remove)
  for i = 1, #ops, 3 do
    local kind = ops[i]
    if kind == SET then set(req, ops[i + 1], ops[i + 2])
    elseif kind == ADD then add(req, ops[i + 1], ops[i + 2])
    else remove(req, ops[i + 1]) end
  end
end

return {
  prepare = function(conf)
    return { request = compile(conf.request, "request"), response = compile(conf.response, "response") }
  end,
  phases = function(c)
    return { c.request and "upstream_request" or nil, c.response and "response" or nil }
  end,
  upstream_request = function(req, c)
    apply(req, c.request, req.set_header, req.add_header, req.remove_header)
  end,
  response = function(req, c)
    apply(req, c.response, req.set_resp_header, req.add_resp_header, req.remove_resp_header)
  end,
}
