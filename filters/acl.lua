-- acl: applies a named access list (pxctl acl add ...): CIDR allow/deny rules
-- (first match wins, then the list's default) and basic-auth users, combined
-- by the list's "satisfy" (any: either passes; all: both must).
--   config: {"list": "office"}
-- Denied: 403. Credentials needed or wrong: 401 with WWW-Authenticate and the
-- list's realm. The Authorization header is not passed upstream unless the
-- list says pass_authorization.
local TEXT = { ["Content-Type"] = "text/plain" }
-- A request method kept in a local: calling it skips a lookup through the
-- request object's metatable (filters run interpreted; this is per request).
local remove_header = px.req.remove_header

return {
  config = { list = "acl" },  -- pxadmind refuses a list that is not stored
  -- Runs once per route: a config without a list name is refused there.
  prepare = function(conf)
    if type(conf.list) ~= "string" or conf.list == "" then error('acl: config needs {"list": "NAME"}', 0) end
    return conf
  end,
  request = function(req, conf)
    -- Reads the Authorization header itself; keep: the list passes it on, or there is none.
    local verdict, keep_authorization = px.acl_check(conf.list)
    if verdict == 2 then
      return px.respond(403, TEXT, "forbidden\n")
    elseif verdict == 1 then
      return px.respond(401, { ["WWW-Authenticate"] = 'Basic realm="' .. px.acl_realm(conf.list) .. '", charset="UTF-8"',
                               ["Content-Type"] = "text/plain" }, "authentication required\n")
    end
    if not keep_authorization then remove_header(req, "Authorization") end
  end,
}
