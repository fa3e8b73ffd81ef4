-- geoip: allows or denies requests by the client's country or autonomous system, from the MaxMind databases
-- pxd.conf names (geoip_database, geoip_asn_database; reopened when their files change).
--   config: {"allow_countries": ["DE", "AT"], "deny_countries": ["XX"], "allow_asns": [64500],
--            "deny_asns": [64501], "unknown": "allow", "status": 403}
-- A deny list is checked first. With an allow list (of countries or of ASNs), the client must be on one.
-- "unknown" says what a client the databases do not know gets: "allow" or "deny" (default: "deny" when there is
-- an allow list, "allow" otherwise). Refused: status (default 403) with a short text body.
local country, asn = px.req.country, px.req.asn
local TEXT = { ["Content-Type"] = "text/plain" }

local function set_of(list, name, check)
  if list == nil then return nil end
  local s = {}
  for i, v in ipairs(list) do
    local ok, key = check(v)
    if not ok then error("geoip: " .. name .. "[" .. (i - 1) .. "]: " .. key, 0) end
    s[key] = true
  end
  return s
end

local function country_code(v)
  if type(v) ~= "string" or not v:match("^%a%a$") then return false, "expected a two-letter country code" end
  return true, v:upper()
end

local function as_number(v)
  if type(v) ~= "number" or v % 1 ~= 0 or v < 1 or v > 4294967295 then return false, "expected an AS number" end
  return true, v
end

return {
  config = { allow_countries = "array", deny_countries = "array", allow_asns = "array", deny_asns = "array",
             unknown = "string", status = "integer" },
  prepare = function(conf)
    local c = {
      allow_c = set_of(conf.allow_countries, "allow_countries", country_code),
      deny_c = set_of(conf.deny_countries, "deny_countries", country_code),
      allow_a = set_of(conf.allow_asns, "allow_asns", as_number),
      deny_a = set_of(conf.deny_asns, "deny_asns", as_number),
      status = conf.status or 403,
    }
    if not (c.allow_c or c.deny_c or c.allow_a or c.deny_a) then
      error("geoip: config needs at least one of allow_countries, deny_countries, allow_asns, deny_asns", 0)
    end
    if c.status < 400 or c.status > 599 then error("geoip: status must be from 400 to 599", 0) end
    local unknown = conf.unknown or ((c.allow_c or c.allow_a) and "deny" or "allow")
    if unknown ~= "allow" and unknown ~= "deny" then error('geoip: unknown must be "allow" or "deny"', 0) end
    c.unknown_denied = unknown == "deny"
    c.body = c.status == 403 and "forbidden\n" or "refused\n"
    return c
  end,
  phases = function() return { "request" } end,
  request = function(req, c)
    local cc = (c.allow_c or c.deny_c) and country(req) or nil
    local n = (c.allow_a or c.deny_a) and asn(req) or nil
    local denied
    if (cc and c.deny_c and c.deny_c[cc]) or (n and c.deny_a and c.deny_a[n]) then
      denied = true
    elseif c.allow_c or c.allow_a then
      local known = (c.allow_c and cc) or (c.allow_a and n)
      if known then
        denied = not ((cc and c.allow_c and c.allow_c[cc]) or (n and c.allow_a and c.allow_a[n]))
      else
        denied = c.unknown_denied
      end
    else
      denied = cc == nil and n == nil and c.unknown_denied
    end
    if denied then return px.respond(c.status, TEXT, c.body) end
  end,
}
