-- challenge: a proof-of-work page in front of a route, against scrapers and bots, without a third-party CAPTCHA.
--   config: {"difficulty": 16, "ttl": 3600, "secret": "...", "exempt_paths": ["/api/"],
--            "exempt_cidrs": ["10.0.0.0/8"], "exempt_bots": {"Googlebot": ["googlebot.com", "google.com"]},
--            "cookie": "px_challenge", "status": 403}
-- A client without a valid cookie gets a small page (status 403, no-store) whose script, served by px from
-- this origin under a strict Content-Security-Policy, finds a number n such that SHA-256(nonce .. n) starts
-- with `difficulty` zero bits (16: about 65,000 hashes, a fraction of a second), then sends it to
-- /.px-challenge/verify. A right answer sets a cookie, signed with HMAC-SHA-256 and bound to the client's
-- address, good for `ttl` seconds, and goes back to the page asked for. Nonces are signed and expire after
-- five minutes. Without `secret`, the key is pxd's own (made at start: cookies end with a restart; give the
-- same secret to every host of a fleet).
-- Exempt: paths starting with one of exempt_paths, clients in exempt_cidrs, and a user agent containing a
-- name of exempt_bots whose address's reverse DNS name ends with one of its domains and resolves back to it
-- (checked once per address per worker for ten minutes).
local client_ip, header, path, query, uri, method, is_https =
  px.req.client_ip, px.req.header, px.req.path, px.req.query, px.req.uri, px.req.method, px.req.is_https
local hmac, sha256, to_hex, equal, byte = px.hmac_sha256, px.sha256, px.to_hex, px.secure_equal, string.byte
local band, rshift = bit.band, bit.rshift
local PREFIX = "/.px-challenge/"
local NONCE_TTL = 300

local SOLVER = [[
(function () {
  "use strict";
  var K = [0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2];
  var W = new Array(64);
  function rotr(x, n) { return (x >>> n) | (x << (32 - n)); }
  // SHA-256 of an ASCII string: the first word of the digest and the second (enough for 64 zero bits).
  function sha256(s) {
    var n = s.length, words = ((n + 9 + 63) >> 6) << 4, m = new Array(words), i;
    for (i = 0; i < words; i++) m[i] = 0;
    for (i = 0; i < n; i++) m[i >> 2] |= s.charCodeAt(i) << (24 - (i & 3) * 8);
    m[n >> 2] |= 0x80 << (24 - (n & 3) * 8);
    m[words - 1] = n * 8;
    var h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a,
        h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (var b = 0; b < words; b += 16) {
      var a = h0, c1 = h1, c2 = h2, d = h3, e = h4, f = h5, g = h6, h = h7, t;
      for (t = 0; t < 64; t++) {
        if (t < 16) W[t] = m[b + t] | 0;
        else {
          var x = W[t - 15], y = W[t - 2];
          W[t] = ((rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3)) + W[t - 7] +
                  (rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10)) + W[t - 16]) | 0;
        }
        var t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
        var t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & c1) ^ (a & c2) ^ (c1 & c2))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c2; c2 = c1; c1 = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + c1) | 0; h2 = (h2 + c2) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    return [h0 >>> 0, h1 >>> 0];
  }
  function zeros(h) {
    var z = 0;
    for (var i = 0; i < 2; i++) {
      if (h[i] === 0) { z += 32; continue; }
      return z + Math.clz32(h[i]);
    }
    return z;
  }
  var form = document.getElementById("px-challenge");
  var nonce = form.getAttribute("data-nonce"), bits = +form.getAttribute("data-bits");
  var status = document.getElementById("px-status");
  var n = 0;
  function step() {
    for (var end = n + 20000; n < end; n++) {
      if (zeros(sha256(nonce + n)) >= bits) {
        form.elements.answer.value = String(n);
        status.textContent = "Done. Taking you on\u2026";
        form.submit();
        return;
      }
    }
    setTimeout(step, 0);
  }
  setTimeout(step, 0);
})();
]]

local PAGE = [[<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>One moment</title>
<script src="/.px-challenge/solver.js" defer></script></head>
<body><h1>One moment</h1>
<p id="px-status">Your browser is checking that it is not a robot. This takes a second or two, and needs JavaScript.</p>
<form id="px-challenge" method="get" action="/.px-challenge/verify" data-nonce="{{nonce}}" data-bits="{{bits}}">
<input type="hidden" name="nonce" value="{{nonce}}"><input type="hidden" name="answer" value="">
<input type="hidden" name="rd" value="{{rd}}"></form></body></html>
]]

local CSP = "default-src 'none'; script-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

local function html(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function unescape(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function arg_of(q, name)
  for k, v in q:gmatch("([^&=]+)=([^&]*)") do
    if k == name then return unescape(v) end
  end
end

local function leading_zero_bits(d)
  local z = 0
  for i = 1, #d do
    local b = byte(d, i)
    if b == 0 then
      z = z + 8
    else
      while band(b, 0x80) == 0 do z, b = z + 1, b * 2 end
      return z
    end
  end
  return z
end

-- A path of this site to go back to: "/" and more, never "//host" or a scheme.
local function safe_rd(rd)
  if type(rd) ~= "string" or rd:sub(1, 1) ~= "/" or rd:sub(2, 2) == "/" or rd:sub(2, 2) == "\\" or
     rd:find("[%c]") then
    return "/"
  end
  return rd
end

local function sign(c, what) return to_hex(hmac(c.secret, what)):sub(1, 32) end

local function cookie_ok(c, req)
  local v = header(req, "cookie")
  if not v then return false end
  local exp, sig = v:match("%f[%w_]" .. c.cookie_pattern .. "=(%d+)%.(%x+)")
  exp = tonumber(exp)
  return exp and exp > os.time() and equal(sig, sign(c, "c|" .. exp .. "|" .. client_ip(req))) or false
end

local bot_checked = {}  -- address -> { until, ok } (per worker)
local bot_count = 0

local function good_bot(c, req)
  if not c.bots then return false end
  local ua = header(req, "user-agent")
  if not ua then return false end
  for name, domains in pairs(c.bots) do
    if ua:find(name, 1, true) then
      local ip = client_ip(req)
      local seen = bot_checked[ip .. "|" .. name]
      if seen and seen[1] > px.now() then return seen[2] end
      local host = px.reverse_dns(ip)
      local ok = false
      if host then
        host = host:lower():gsub("%.$", "")
        for _, d in ipairs(domains) do
          if host == d or host:sub(-(#d + 1)) == "." .. d then ok = true end
        end
      end
      if bot_count > 10000 then bot_checked, bot_count = {}, 0 end
      bot_count = bot_count + 1
      bot_checked[ip .. "|" .. name] = { px.now() + 600, ok }
      return ok
    end
  end
  return false
end

local function challenge_page(c, req)
  local ts = tostring(os.time())
  local rnd = to_hex(px.random_bytes(8))
  local nonce = ts .. "." .. rnd .. "." .. sign(c, "n|" .. ts .. "|" .. rnd .. "|" .. client_ip(req))
  local rd = method(req) == "GET" and safe_rd(uri(req)) or "/"
  local body = PAGE:gsub("{{(%w+)}}", { nonce = nonce, bits = tostring(c.difficulty), rd = html(rd) })
  return px.respond(c.status, { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store",
                                ["Content-Security-Policy"] = CSP, ["X-Content-Type-Options"] = "nosniff" }, body)
end

local function verify(c, req)
  local q = query(req)
  local nonce, answer, rd = arg_of(q, "nonce"), arg_of(q, "answer"), safe_rd(arg_of(q, "rd"))
  local ts, rnd, sig = (nonce or ""):match("^(%d+)%.(%x+)%.(%x+)$")
  local fresh = ts and tonumber(ts) + NONCE_TTL >= os.time() and tonumber(ts) <= os.time() + 5
  if not fresh or not equal(sig, sign(c, "n|" .. ts .. "|" .. rnd .. "|" .. client_ip(req))) or
     not (answer or ""):match("^%d+$") or #answer > 12 or
     leading_zero_bits(sha256(nonce .. answer)) < c.difficulty then
    px.log("info", "challenge: a wrong or stale answer from", client_ip(req))
    return challenge_page(c, req)
  end
  local exp = os.time() + c.ttl
  local cookie = c.cookie .. "=" .. exp .. "." .. sign(c, "c|" .. exp .. "|" .. client_ip(req)) ..
                 "; Path=/; Max-Age=" .. c.ttl .. "; HttpOnly; SameSite=Lax" .. (is_https(req) and "; Secure" or "")
  return px.respond(303, { ["Location"] = rd, ["Set-Cookie"] = cookie, ["Cache-Control"] = "no-store" }, "")
end

local function strings(list, name)
  for i, v in ipairs(list or {}) do
    if type(v) ~= "string" then error("challenge: " .. name .. "[" .. (i - 1) .. "] must be a string", 0) end
  end
  return list or {}
end

return {
  config = { difficulty = "integer", ttl = "integer", secret = "string", exempt_paths = "array",
             exempt_cidrs = "array", exempt_bots = "object", cookie = "string", status = "integer" },
  prepare = function(conf)
    local d = conf.difficulty or 16
    if d < 1 or d > 32 then error("challenge: difficulty must be 1 to 32 (zero bits)", 0) end
    local ttl = conf.ttl or 3600
    if ttl < 60 or ttl > 30 * 86400 then error("challenge: ttl must be 60 seconds to 30 days", 0) end
    if conf.secret and #conf.secret < 16 then error("challenge: secret must be at least 16 characters", 0) end
    local cookie = conf.cookie or "px_challenge"
    if not cookie:match("^[%w_%-]+$") then error("challenge: cookie must be a cookie name", 0) end
    local status = conf.status or 403
    if status < 200 or status > 599 then error("challenge: status must be 200 to 599", 0) end
    local bots
    for name, domains in pairs(conf.exempt_bots or {}) do
      if type(domains) ~= "table" or #domains == 0 then
        error("challenge: exempt_bots." .. name .. " must be a list of domains", 0)
      end
      bots = bots or {}
      bots[name] = strings(domains, "exempt_bots." .. name)
    end
    local ok, cidrs = pcall(px.cidrs, strings(conf.exempt_cidrs, "exempt_cidrs"))
    if not ok then error("challenge: exempt_cidrs: " .. tostring(cidrs):gsub("^.-px%.cidrs: ", ""), 0) end
    return { difficulty = d, ttl = ttl, secret = conf.secret or px.host_secret(),
             paths = strings(conf.exempt_paths, "exempt_paths"), cidrs = cidrs, bots = bots, cookie = cookie,
             cookie_pattern = cookie:gsub("%-", "%%-"), status = status }
  end,
  yields = true,  -- a bot's reverse DNS lookup waits (px.reverse_dns)
  request = function(req, c)
    local p = path(req)
    if p:sub(1, #PREFIX) == PREFIX then
      if p == PREFIX .. "solver.js" then
        return px.respond(200, { ["Content-Type"] = "application/javascript; charset=utf-8",
                                 ["Cache-Control"] = "public, max-age=3600", ["X-Content-Type-Options"] = "nosniff" },
                          SOLVER)
      end
      if p == PREFIX .. "verify" then return verify(c, req) end
    end
    if cookie_ok(c, req) then return end
    for _, prefix in ipairs(c.paths) do
      if p:sub(1, #prefix) == prefix then return end
    end
    if c.cidrs:contains(client_ip(req)) then return end
    if good_bot(c, req) then return end
    return challenge_page(c, req)
  end,
}
