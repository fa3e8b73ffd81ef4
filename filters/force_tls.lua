-- force_tls: answers plain-HTTP requests with a redirect to the https URL
-- (301 for GET and HEAD, 308 otherwise so the method and body are kept), and
-- optionally adds Strict-Transport-Security to responses served over TLS.
-- X-Forwarded-Proto counts only from trusted proxies (pxd.conf trusted_proxies).
--   config: {"hsts": {"max_age": 31536000, "include_subdomains": true, "preload": false},
--            "port": 443}
return {
  phases = function(conf) return { "request", conf.hsts and "response" or nil } end,
  request = function(req, conf)
    if req:is_https() then return end
    local m = req:method()
    local status = (m == "GET" or m == "HEAD") and 301 or 308
    local host = req:host()
    if conf.port and conf.port ~= 443 then host = host .. ":" .. conf.port end
    return px.redirect("https://" .. host .. req:uri(), status)
  end,
  response = function(req, conf)
    local h = conf.hsts
    if not h or not req:is_https() then return end
    local v = "max-age=" .. string.format("%d", h.max_age or 31536000)
    if h.include_subdomains then v = v .. "; includeSubDomains" end
    if h.preload then v = v .. "; preload" end
    req:set_resp_header("Strict-Transport-Security", v)
  end,
}
