-- error_pages: the route's own pages for the errors px answers itself (no upstream reachable: 502, a
-- timeout: 504, ...) and for its filters' refusals (403 from acl, 429 from a rate limit), and, if asked,
-- for the upstream's own errors. HTML, JSON or plain text, as the client's Accept prefers.
--   config: {"statuses": [403, 404, 429, 500, 502, 503, 504],   (the default)
--            "upstream": false,            (true: the upstream's answers with those statuses too)
--            "html": "<h1>{{status}} {{reason}}</h1>", "html_file": "/etc/px/pages/error.html",
--            "json": "...", "json_file": "...", "text": "...", "text_file": "...",
--            "pages": {"503": {"html_file": "/etc/px/pages/maintenance.html"}}}
-- Placeholders: {{status}}, {{reason}}, {{request_id}} (escaped for HTML and JSON). Files are read once,
-- when the route is installed (pxadmind checks that they can be read). Retry-After and WWW-Authenticate of
-- the answer replaced are kept.
local KINDS = { { "html", "text/html" }, { "json", "application/json" }, { "text", "text/plain" } }
local DEFAULT = {
  html = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{{status}} {{reason}}</title></head>\n' ..
         '<body><h1>{{status}} {{reason}}</h1>\n<p>Request ID: {{request_id}}</p></body></html>\n',
  json = '{"status": {{status}}, "error": "{{reason}}", "request_id": "{{request_id}}"}\n',
  text = '{{status}} {{reason}}\nRequest ID: {{request_id}}\n',
}
local REASONS = { [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [413] = "Content Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type", [421] = "Misdirected Request",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large", [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout" }
local KEEP = { "Retry-After", "WWW-Authenticate" }
local ESCAPE = {
  html = function(s) return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                                   ["'"] = "&#39;" })) end,
  json = function(s) return (s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)) end,
  text = function(s) return s end,
}
local PAGE = { html = "string", html_file = "string", json = "string", json_file = "string", text = "string",
               text_file = "string" }
local header, resp_header, status_of, from_upstream, request_id =
  px.req.header, px.req.resp_header, px.req.status, px.req.from_upstream, px.req.request_id

-- The templates of one status: own (per status), then the route's, then px's.
local function templates(own, conf)
  local out = {}
  for _, k in ipairs(KINDS) do
    local kind = k[1]
    local tmpl
    for i = 1, 2 do
      local src = i == 1 and own or conf
      if tmpl == nil and src then
        if src[kind .. "_file"] then
          local data, err = px.read_file(src[kind .. "_file"])
          if not data then error("error_pages: " .. kind .. "_file: " .. err, 0) end
          tmpl = data
        else
          tmpl = src[kind]
        end
      end
    end
    out[#out + 1] = { kind = kind, mime = k[2] .. "; charset=utf-8", range = k[2], tmpl = tmpl or DEFAULT[kind] }
  end
  return out
end

-- The q the client's Accept gives a media type: its most specific matching range's, or 0.
local function q_of(accept, range)
  local best, spec = 0, -1
  local major = range:match("^[^/]+")
  for part in accept:gmatch("[^,]+") do
    local r, params = part:match("^%s*([^;%s]+)%s*(.*)$")
    if r then
      r = r:lower()
      local s = (r == range and 2) or (r == major .. "/*" and 1) or (r == "*/*" and 0) or -1
      if s > spec then
        spec = s
        best = tonumber(params:match(";%s*[qQ]%s*=%s*([%d.]+)")) or 1
      end
    end
  end
  return best
end

local function choose(accept, page)
  if not accept or accept == "" then return page[1] end
  local pick, pq = nil, 0
  for _, t in ipairs(page) do
    local q = q_of(accept, t.range)
    if q > pq then pick, pq = t, q end
  end
  return pick or page[#page]  -- nothing acceptable: text (a 406 would hide the error itself)
end

return {
  config = { statuses = "array", upstream = "boolean", pages = "object", html = "string", html_file = "string",
             json = "string", json_file = "string", text = "string", text_file = "string" },
  prepare = function(conf)
    local c = { upstream = conf.upstream == true, pages = {} }
    local own = {}
    for k, v in pairs(conf.pages or {}) do
      local s = tonumber(k)
      if not s or s % 1 ~= 0 or s < 400 or s > 599 then
        error("error_pages: pages: '" .. tostring(k) .. "' is not a status from 400 to 599", 0)
      end
      if type(v) ~= "table" then error("error_pages: pages." .. k .. " must be an object", 0) end
      for key, x in pairs(v) do
        if not PAGE[key] then
          error("error_pages: pages." .. k .. ": unknown key '" .. tostring(key) .. "' (known: html, html_file, " ..
                "json, json_file, text, text_file)", 0)
        end
        if type(x) ~= "string" then error("error_pages: pages." .. k .. "." .. key .. " must be a string", 0) end
      end
      own[s] = v
    end
    local statuses = conf.statuses or { 403, 404, 429, 500, 502, 503, 504 }
    for _, s in ipairs(statuses) do
      if type(s) ~= "number" or s % 1 ~= 0 or s < 400 or s > 599 then
        error("error_pages: statuses: " .. tostring(s) .. " is not a status from 400 to 599", 0)
      end
      c.pages[s] = templates(own[s], conf)
    end
    for s in pairs(own) do
      if not c.pages[s] then error("error_pages: pages." .. s .. ": the status is not in statuses", 0) end
    end
    return c
  end,
  phases = function() return { "response" } end,
  response = function(req, c)
    local s = status_of(req)
    local page = c.pages[s]
    if not page or (not c.upstream and from_upstream(req)) then return end
    local t = choose(header(req, "Accept"), page)
    local esc = ESCAPE[t.kind]
    local vars = { status = tostring(s), reason = esc(REASONS[s] or "Error"), request_id = esc(request_id(req)) }
    local h = { ["Content-Type"] = t.mime, ["Cache-Control"] = "no-store" }
    for _, n in ipairs(KEEP) do
      local v = resp_header(req, n)
      if v then h[n] = v end
    end
    return px.respond(s, h, (t.tmpl:gsub("{{([%w_]+)}}", vars)))
  end,
}
