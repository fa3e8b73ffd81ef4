-- force_tls: answers plain-HTTP requests with a redirect to the https URL
-- (301 for GET and HEAD, 308 otherwise so the method and body are kept), and
-- optionally adds Strict-Transport-Security to responses served over TLS.
-- X-Forwarded-Proto counts only from trusted proxies (pxd.conf trusted_proxies).
--   config: {"hsts": {"max_age": 31536000, "include_subdomains": true, "preload": false},
--            "port": 443}
local R = px.req  -- request methods in locals: no metatable lookup per call
local is_https, method, host, uri, set_resp_header = R.is_https, R.method, R.host, R.uri, R.set_resp_header

return {
  config = { port = "integer", hsts = { max_age = "integer", include_subdomains = "boolean", preload = "boolean" } },
  -- Once per route: check the config and build the strings a request needs.
  prepare = function(conf)
    local c = { port = "" }
    if conf.port ~= nil then
      if type(conf.port) ~= "number" or conf.port < 1 or conf.port > 65535 or conf.port % 1 ~= 0 then
        error("force_tls: port must be a number from 1 to 65535", 0)
      end
      if conf.port ~= 443 then c.port = ":" .. string.format("%d", conf.port) end
    end
    local h = conf.hsts
    if h then
      if type(h) ~= "table" then error('force_tls: hsts must be an object, e.g. {"max_age": 31536000}', 0) end
      local age = h.max_age or 31536000
      if type(age) ~= "number" or age < 0 or age % 1 ~= 0 then
        error("force_tls: hsts.max_age must be a whole number of seconds", 0)
      end
      c.hsts = "max-age=" .. string.format("%d", age) .. (h.include_subdomains and "; includeSubDomains" or "") ..
               (h.preload and "; preload" or "")
    end
    return c
  end,
  phases = function(c) return { "request", c.hsts and "response" or nil } end,
  request = function(req, c)
    if is_https(req) then return end
    local m = method(req)
    local status = (m == "GET" or m == "HEAD") and 301 or 308
    return px.redirect("https://" .. host(req) .. c.port .. uri(req), status)
  end,
  response = function(req, c)
    if is_https(req) then set_resp_header(req, "Strict-Transport-Security", c.hsts) end
  end,
}
