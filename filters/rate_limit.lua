-- rate_limit: nginx limit_req for a route, exact for the whole host (every worker counts in one table).
--   config: {"rate": "10r/s", "burst": 20, "delay": 5, "key": "client", "status": 429}
-- A leaky bucket per key: requests leave at `rate` ("N r/s" or "N r/m"); up to `burst` more wait their turn,
-- the first `delay` of them at once (nginx's delay=; "nodelay": true lets the whole burst through at once);
-- past that the request is refused with `status` (default 429) and Retry-After.
-- key: "client" (the real client address, the default), "route" (one bucket for all), "header:NAME" (a
-- request header's value), or "expr:LUA" (a Lua expression of `req`, such as
-- "expr:req:header('x-api-key') or req:client_ip()"). A request whose key is empty or nil is not limited
-- (as nginx's). `zone` names the bucket set: routes naming the same zone share buckets (default: the route).
-- "dry_run": true counts and logs what it would refuse, and lets it through (nginx's limit_req_dry_run).
local limit = px.limit
local client_ip, header = px.req.client_ip, px.req.header
local ceil = math.ceil

local function parse_rate(v)
  local n, unit = tostring(v):match("^%s*(%d+%.?%d*)%s*r/([sm])%s*$")
  n = tonumber(n)
  if not n or n <= 0 then return nil end
  return unit == "m" and n / 60 or n
end

local function whole(v, name, default)
  if v == nil then return default end
  if type(v) ~= "number" or v % 1 ~= 0 or v < 0 or v > 1000000 then
    error("rate_limit: " .. name .. " must be a whole number from 0 to 1000000", 0)
  end
  return v
end

-- The key's function, and what px needs to run the filter in C++ (the same steps; see px-filters(7)).
local function key_fn(key)
  if key == nil or key == "client" then return nil, { key = "client" } end  -- px.limit's default: the client's address
  if key == "route" then return function() return "*" end, { key = "route" } end
  local name = key:match("^header:(.+)$")
  if name then
    if not name:match("^[%w!#$%%&'*+.^_`|~-]+$") then error("rate_limit: key: '" .. name .. "' is not a header name", 0) end
    return function(req) return header(req, name) end, { key = "header", header = name }
  end
  local expr = key:match("^expr:(.+)$")
  if expr then
    local fn, err = px.expression(expr)
    if not fn then error("rate_limit: key: " .. tostring(err), 0) end
    return fn
  end
  error("rate_limit: key must be client, route, header:NAME or expr:LUA (got '" .. key .. "')", 0)
end

return {
  config = { rate = "string", burst = "integer", delay = "integer", nodelay = "boolean", key = "string",
             zone = "string", status = "integer", dry_run = "boolean" },
  prepare = function(conf, route)
    if conf.rate == nil then error("rate_limit: rate is required (\"10r/s\" or \"30r/m\")", 0) end
    local rate = parse_rate(conf.rate)
    if not rate or rate > 1e9 then error("rate_limit: rate must look like \"10r/s\" or \"30r/m\"", 0) end
    local burst = whole(conf.burst, "burst", 0)
    local delay = whole(conf.delay, "delay", 0)
    if conf.nodelay and conf.delay ~= nil then error("rate_limit: give delay or nodelay, not both", 0) end
    local status = conf.status or 429
    if status < 400 or status > 599 then error("rate_limit: status must be 400 to 599", 0) end
    local key, native = key_fn(conf.key)
    return { rate = rate, burst = burst, delay = conf.nodelay and burst or math.min(delay, burst),
             key = key, native = native, zone = conf.zone or ("route:" .. tostring(route)),
             status = status, dry_run = conf.dry_run == true }
  end,
  request = function(req, c)
    local k
    if c.key then  -- else the client's address (px.limit's default)
      k = c.key(req)
      if k == nil or k == "" then return end
      k = tostring(k)
    end
    local wait, retry = limit(c.zone, k, c.rate, c.burst, c.delay)
    if wait == nil then
      if c.dry_run then
        px.log("info", "rate_limit: would refuse", k or client_ip(req), "(dry run)")
        return
      end
      return px.respond(c.status, { ["Retry-After"] = tostring(math.max(1, ceil(retry))),
                                    ["Content-Type"] = "text/plain" }, "too many requests\n")
    end
    if wait > 0 and not c.dry_run then return px.delay(wait) end  -- the request waits, the worker does not
  end,
}
