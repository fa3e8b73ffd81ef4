-- acl: applies a named access list (pxctl acl add ...): CIDR allow/deny rules
-- (first match wins, then the list's default) and basic-auth users, combined
-- by the list's "satisfy" (any: either passes; all: both must).
--   config: {"list": "office"}
-- Denied: 403. Credentials needed or wrong: 401 with WWW-Authenticate and the
-- list's realm. The Authorization header is not passed upstream unless the
-- list says pass_authorization.
return {
  request = function(req, conf)
    local list = conf.list
    if type(list) ~= "string" then error("acl: config needs {\"list\": \"NAME\"}") end
    local rc = px.acl_check(list, req:header("Authorization"))
    local pass = bit.band(rc, 0x10) ~= 0
    rc = bit.band(rc, 0x0f)
    if rc == 2 then
      return px.respond(403, { ["Content-Type"] = "text/plain" }, "forbidden\n")
    elseif rc == 1 then
      return px.respond(401, { ["WWW-Authenticate"] = 'Basic realm="' .. px.acl_realm(list) .. '", charset="UTF-8"',
                               ["Content-Type"] = "text/plain" }, "authentication required\n")
    end
    if not pass then req:remove_header("Authorization") end
  end,
}
