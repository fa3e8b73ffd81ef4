-- redirect: sends a route's requests to another URL.
--   config: {"url": "https://new.example.com", "status": 301, "preserve_path": true}
-- status: 301, 302, 307 or 308 (default 302). With preserve_path (the default)
-- the request's path and query are appended to url.
return {
  config = { url = "string", status = "integer", preserve_path = "boolean" },
  prepare = function(conf)
    local url = conf.url
    if type(url) ~= "string" or url == "" then error('redirect: config needs {"url": "..."}', 0) end
    local status = conf.status or 302
    if status ~= 301 and status ~= 302 and status ~= 307 and status ~= 308 then
      error("redirect: status must be 301, 302, 307 or 308", 0)
    end
    return { url = conf.preserve_path ~= false and url:gsub("/$", "") or url, status = status,
             preserve = conf.preserve_path ~= false }
  end,
  request = function(req, c)
    return px.redirect(c.preserve and c.url .. req:uri() or c.url, c.status)
  end,
}
