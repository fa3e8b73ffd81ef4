-- forward_auth: asks an auth service about each request first (nginx auth_request, Traefik ForwardAuth), for
-- Authelia, Authentik, oauth2-proxy and the like.
--   config: {"url": "http://127.0.0.1:9091/api/verify", "copy_headers": ["Remote-User", "Remote-Groups"],
--            "request_headers": ["Cookie", "Authorization"], "timeout": 5, "cache": 0}
-- The subrequest (GET, no body) carries X-Forwarded-Method, -Proto, -Host, -Uri and -For, X-Original-URL and
-- X-Original-Method, and the request's own `request_headers` (default: Cookie, Authorization,
-- Proxy-Authorization, Accept, User-Agent, X-Requested-With). Then:
--   - 2xx: the request goes on, with each of `copy_headers` set from the answer (and removed when the answer
--     has none: a client cannot send its own Remote-User);
--   - 401, 403 and 3xx: the client gets the auth service's answer (status, Location, WWW-Authenticate,
--     Set-Cookie, Content-Type, Cache-Control and body), as it gave it;
--   - anything else, a failure or `timeout` (seconds, default 5): 503, and the log says why.
-- cache (seconds, default 0: off): a 2xx is remembered for the same Cookie and Authorization values, per
-- worker, for that long (at most 10000 entries).
local header = px.req.header
local set_header, remove_header = px.req.set_header, px.req.remove_header
local fetch, now = px.fetch, px.now

local DEFAULT_HEADERS = { "Cookie", "Authorization", "Proxy-Authorization", "Accept", "User-Agent",
                          "X-Requested-With" }
local PASS_BACK = { "location", "www-authenticate", "content-type", "cache-control" }
local TOKEN = "^[%w!#$%%&'*+.^_`|~-]+$"

local cache, cached = {}, 0

local function names(list, what)
  local out = {}
  for i, n in ipairs(list) do
    if type(n) ~= "string" or not n:match(TOKEN) then
      error("forward_auth: " .. what .. "[" .. (i - 1) .. "] must be a header name", 0)
    end
    out[i] = n
  end
  return out
end

local function answer(res)
  local h = {}
  for _, n in ipairs(PASS_BACK) do h[n] = res.headers[n] end
  h["set-cookie"] = res.multi and res.multi["set-cookie"] or res.headers["set-cookie"]
  return px.respond(res.status, h, res.body)
end

return {
  config = { url = "string", copy_headers = "array", request_headers = "array", timeout = "number",
             cache = "number" },
  prepare = function(conf)
    if type(conf.url) ~= "string" or not conf.url:match("^https?://[^/]+") then
      error("forward_auth: url must be the auth service's http:// or https:// URL", 0)
    end
    local timeout = conf.timeout or 5
    if timeout <= 0 or timeout > 300 then error("forward_auth: timeout must be above 0 and at most 300 seconds", 0) end
    local ttl = conf.cache or 0
    if ttl < 0 or ttl > 3600 then error("forward_auth: cache must be 0 to 3600 seconds", 0) end
    local copy = names(conf.copy_headers or {}, "copy_headers")
    local lower = {}
    for i, n in ipairs(copy) do lower[i] = n:lower() end
    return { url = conf.url, copy = copy, copy_lower = lower, timeout = timeout, ttl = ttl,
             opts = { forward = names(conf.request_headers or DEFAULT_HEADERS, "request_headers"), forwarded = true,
                      timeout = timeout } }
  end,
  yields = true,  -- it waits for the auth service (px.fetch) without holding the worker
  request = function(req, c)
    local key
    if c.ttl > 0 then
      key = (header(req, "cookie") or "") .. "\0" .. (header(req, "authorization") or "")
      local hit = cache[key]
      if hit and hit.until_ > now() then
        for _, n in ipairs(c.copy) do
          local v = hit.set[n]
          if v then set_header(req, n, v) elseif header(req, n) then remove_header(req, n) end
        end
        return
      end
    end
    local res, err = fetch(c.url, c.opts)  -- X-Forwarded-* and the request's own fields: px.fetch adds them
    if not res then
      px.log("warn", "forward_auth: " .. c.url .. ": " .. tostring(err))
      return px.respond(503, { ["Content-Type"] = "text/plain" }, "authentication service unavailable\n")
    end
    local s = res.status
    if s >= 200 and s < 300 then
      local set = key and {}  -- kept for the cache only
      local lower = c.copy_lower
      for i, n in ipairs(c.copy) do
        local v = res.headers[lower[i]]
        if v then  -- replaces what the client sent: only the auth service says who this is
          set_header(req, n, v)
          if set then set[n] = v end
        elseif header(req, n) then
          remove_header(req, n)
        end
      end
      if key then
        if cached >= 10000 then cache, cached = {}, 0 end
        if not cache[key] then cached = cached + 1 end
        cache[key] = { until_ = now() + c.ttl, set = set }
      end
      return
    end
    if s == 401 or s == 403 or (s >= 300 and s < 400) then return answer(res) end
    px.log("warn", "forward_auth: " .. c.url .. " answered " .. s)
    return px.respond(503, { ["Content-Type"] = "text/plain" }, "authentication service unavailable\n")
  end,
}
