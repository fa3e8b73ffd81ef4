-- headers: adds, sets or removes request headers (before the request goes
-- upstream) and response headers (before the response goes to the client).
--   config: {"request":  {"set": {"X-A": "1"}, "add": {"X-B": "2"}, "remove": ["X-C"]},
--            "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}}
-- Removals apply first, then sets, then adds.
-- Each section compiles, once per route, into a flat list of
-- (request method, header name, value) triples.
local METHODS = {
  request = { remove = "remove_header", set = "set_header", add = "add_header" },
  response = { remove = "remove_resp_header", set = "set_resp_header", add = "add_resp_header" },
}

local function compile(section, side)
  if section == nil then return nil end
  if type(section) ~= "table" then error("headers: '" .. side .. "' must be an object", 0) end
  local m = METHODS[side]
  local ops = {}
  local function op(kind, name, value)
    if type(name) ~= "string" or not name:match("^[!#$%%&'*+.^_`|~%w-]+$") then
      error("headers: " .. side .. ": '" .. tostring(name) .. "' is not a header name", 0)
    end
    if kind ~= "remove" and type(value) ~= "string" and type(value) ~= "number" then
      error("headers: " .. side .. ": the value of " .. name .. " must be a string or a number", 0)
    end
    ops[#ops + 1] = px.req[m[kind]]; ops[#ops + 1] = name; ops[#ops + 1] = kind ~= "remove" and tostring(value) or false
  end
  for _, name in ipairs(section.remove or {}) do op("remove", name) end
  for name, value in pairs(section.set or {}) do op("set", name, value) end
  for name, value in pairs(section.add or {}) do op("add", name, value) end
  return ops
end

local function apply(req, ops)
  for i = 1, #ops, 3 do ops[i](req, ops[i + 1], ops[i + 2]) end
end

local SECTION = { set = "object", add = "object", remove = "array" }

return {
  config = { request = SECTION, response = SECTION },
  prepare = function(conf)
    return { request = compile(conf.request, "request"), response = compile(conf.response, "response") }
  end,
  phases = function(c)
    return { c.request and "upstream_request" or nil, c.response and "response" or nil }
  end,
  upstream_request = function(req, c) apply(req, c.request) end,
  response = function(req, c) apply(req, c.response) end,
}
