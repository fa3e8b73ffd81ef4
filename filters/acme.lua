-- acme: answers ACME HTTP-01 challenges (RFC 8555 8.3) for any host, before
-- routing and before any redirect to HTTPS, from the challenge records
-- pxadmind keeps in the store (PUT /v1/acme/challenges/TOKEN).
-- It is a global filter (pxd.conf: global_filters acme), not a route's.
local PREFIX = "/.well-known/acme-challenge/"

return {
  config = {},  -- it takes none
  path_prefix = PREFIX,  -- px enters this filter only for these paths (checked before Lua)
  early_request = function(req)
    local path = req:path()
    if path:sub(1, #PREFIX) ~= PREFIX then return end
    local token = path:sub(#PREFIX + 1)
    if not token:match("^[A-Za-z0-9_-]+$") then
      return px.respond(404, { ["Content-Type"] = "text/plain" }, "no such challenge\n")
    end
    local keyauth = px.acme_challenge(token)
    if not keyauth then
      return px.respond(404, { ["Content-Type"] = "text/plain" }, "no such challenge\n")
    end
    return px.respond(200, { ["Content-Type"] = "application/octet-stream" }, keyauth)
  end,
}
