-- px.lua: the Lua side of px's filter API. Start here (with px-filters(7)).
--
-- A filter is a Lua file in filters/ (or the configured filters_dir) that
-- returns a table of phase functions:
--
--   return {
--     request = function(req, conf) ... end,   -- conf: the route's config for this filter
--     response = function(req, conf) ... end,
--   }
--
-- Phases, in order: early_request, request, upstream_peer, upstream_request,
-- response, logging. A phase function returns nothing to continue; it answers
-- with px.respond / px.redirect (early_request, request), changes things
-- (upstream_peer .. response), or only reads (logging). The engine checks the
-- phase of every call and refuses with "px.CALL: not allowed in phase P".
--
-- The C side is reached through LuaJIT's FFI (functions exported by pxd);
-- every call acts on the request being processed by this worker.
local ffi = require("ffi")
local C = ffi.C

ffi.cdef [[
int px_phase(void);
const char* px_req_field(int which, size_t* len);
int px_req_header(const char* name, size_t nlen, int index, const char** val, size_t* vlen);
int px_req_header_edit(int mode, const char* name, size_t nlen, const char* val, size_t vlen);
int px_resp_status(void);
int px_resp_set_status(int status);
int px_resp_header(const char* name, size_t nlen, int index, const char** val, size_t* vlen);
int px_resp_header_edit(int mode, const char* name, size_t nlen, const char* val, size_t vlen);
int px_respond(int status, const char* body, size_t blen);
int px_respond_header(const char* name, size_t nlen, const char* val, size_t vlen);
int px_set_peer(int index);
int px_peer_count(void);
int px_is_tls(void);
int px_is_https(void);
void px_log(int level, const char* msg, size_t len);
double px_now(void);
int px_acl_check(const char* name, size_t nlen, const char* auth, size_t alen, const char** realm, size_t* rlen);
int px_acme_lookup(const char* token, size_t tlen, const char** val, size_t* vlen);
const char* px_error(void);
]]

-- Cached function pointers: cheaper to call than a lookup in ffi.C each time.
-- Outside pxd (pxctl filter check) the symbols do not exist: stubs stand in.
local function sym(name)
  local ok, f = pcall(function() return C[name] end)
  if ok then return f end
  return function() error("the px API is only available inside pxd", 2) end
end
local C_phase, C_req_field, C_req_header, C_req_header_edit =
  sym("px_phase"), sym("px_req_field"), sym("px_req_header"), sym("px_req_header_edit")
local C_resp_status, C_resp_set_status, C_resp_header, C_resp_header_edit =
  sym("px_resp_status"), sym("px_resp_set_status"), sym("px_resp_header"), sym("px_resp_header_edit")
local C_respond, C_respond_header, C_set_peer, C_peer_count =
  sym("px_respond"), sym("px_respond_header"), sym("px_set_peer"), sym("px_peer_count")
local C_is_tls, C_log, C_now, C_acl_check, C_acme_lookup, C_error, C_is_https =
  sym("px_is_tls"), sym("px_log"), sym("px_now"), sym("px_acl_check"), sym("px_acme_lookup"), sym("px_error"),
  sym("px_is_https")

local px = {}
local sz = ffi.new("size_t[1]")
local sz2 = ffi.new("size_t[1]")
local str = ffi.new("const char*[1]")
local str2 = ffi.new("const char*[1]")

local PHASES = { "early_request", "request", "upstream_peer", "upstream_request", "response", "logging" }
px.phases = PHASES

local function check(rc)
  if rc < 0 then error(ffi.string(C_error()), 3) end
  return rc
end

local function field(which)
  local p = C_req_field(which, sz)
  if p == nil then error(ffi.string(C_error()), 3) end
  return ffi.string(p, sz[0])
end

-- The request object handed to phase functions. req.ctx is a table shared by
-- every phase of this request.
local Req = {}
Req.__index = Req

function Req:method() return field(0) end
function Req:path() return field(1) end        -- without the query
function Req:query() return field(2) end       -- without the '?', "" when none
function Req:host() return field(3) end        -- Host as sent, without the port
function Req:client_ip() return field(4) end   -- the real client, behind trusted proxies
function Req:sni() return field(5) end         -- "" without TLS
function Req:route() return field(6) end       -- the route's name ("" before routing)
function Req:uri() return field(7) end         -- path and query as sent
function Req:scheme() return field(8) end      -- "https" when TLS or a trusted X-Forwarded-Proto says so
function Req:is_tls() return check(C_is_tls()) == 1 end
function Req:is_https() return check(C_is_https()) == 1 end  -- scheme() == "https", without a string

function Req:header(name, index)
  local rc = check(C_req_header(name, #name, index or 0, str, sz))
  if rc == 0 then return nil end
  return ffi.string(str[0], sz[0])
end
function Req:set_header(name, value) check(C_req_header_edit(0, name, #name, value, #value)) end
function Req:add_header(name, value) check(C_req_header_edit(1, name, #name, value, #value)) end
function Req:remove_header(name) check(C_req_header_edit(2, name, #name, nil, 0)) end

function Req:status() return check(C_resp_status()) end
function Req:set_status(s) check(C_resp_set_status(s)) end
function Req:resp_header(name, index)
  local rc = check(C_resp_header(name, #name, index or 0, str, sz))
  if rc == 0 then return nil end
  return ffi.string(str[0], sz[0])
end
function Req:set_resp_header(name, value) check(C_resp_header_edit(0, name, #name, value, #value)) end
function Req:add_resp_header(name, value) check(C_resp_header_edit(1, name, #name, value, #value)) end
function Req:remove_resp_header(name) check(C_resp_header_edit(2, name, #name, nil, 0)) end

-- Answer the request from the filter (early_request, request).
function px.respond(status, headers, body)
  body = body or ""
  if headers then
    for k, v in pairs(headers) do check(C_respond_header(k, #k, tostring(v), #tostring(v))) end
  end
  check(C_respond(status, body, #body))
  return px.DONE
end

function px.redirect(url, status)
  status = status or 302
  if status ~= 301 and status ~= 302 and status ~= 303 and status ~= 307 and status ~= 308 then
    error("px.redirect: status must be 301, 302, 303, 307 or 308", 2)
  end
  check(C_respond_header("Location", 8, url, #url))
  check(C_respond(status, "", 0))
  return px.DONE
end

-- upstream_peer: choose the route's peer by its position (1-based).
function px.set_peer(index) check(C_set_peer(index)) end
function px.peer_count() return check(C_peer_count()) end

local LEVELS = { error = 0, warn = 1, info = 2, debug = 3 }
function px.log(level, ...)
  local n = LEVELS[level]
  if not n then error("px.log: level must be error, warn, info or debug", 2) end
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  local msg = table.concat(parts, " ")
  C_log(n, msg, #msg)
end

function px.now() return C_now() end   -- monotonic seconds

-- Built-in checks the acl and acme filters use.
-- 0 allow, 1 needs credentials (401), 2 denied (403); plus 0x10 when the list passes Authorization on.
-- The realm (a string) is made only when asked for.
function px.acl_check(list, authorization)
  authorization = authorization or ""
  return check(C_acl_check(list, #list, authorization, #authorization, str, sz))
end
function px.acl_realm(list)
  check(C_acl_check(list, #list, "", 0, str, sz))
  return ffi.string(str[0], sz[0])
end
function px.acme_challenge(token)
  local rc = check(C_acme_lookup(token, #token, str, sz))
  if rc == 0 then return nil end
  return ffi.string(str[0], sz[0])
end

-- A per-worker table for counters with expiry (enough for a rate limit).
local shared_data = {}
local shared_count = 0
px.shared = {}
function px.shared.get(key)
  local e = shared_data[key]
  if not e then return nil end
  if e[2] and e[2] <= C_now() then shared_data[key] = nil; shared_count = shared_count - 1; return nil end
  return e[1]
end
function px.shared.set(key, value, ttl)
  if shared_data[key] == nil then
    if value == nil then return end
    shared_count = shared_count + 1
    if shared_count > 100000 then error("px.shared: more than 100000 keys in this worker", 2) end
  elseif value == nil then
    shared_count = shared_count - 1
  end
  shared_data[key] = value ~= nil and { value, ttl and (C_now() + ttl) or nil } or nil
end
function px.shared.incr(key, by, ttl)
  local v = px.shared.get(key)
  if v == nil then
    px.shared.set(key, by or 1, ttl)
    return by or 1
  end
  v = v + (by or 1)
  shared_data[key][1] = v
  return v
end

px.DONE = setmetatable({}, { __tostring = function() return "px.DONE" end })

-- ---- the engine's side: not for filters ----

local engine = {}
px._engine = engine

local filters = {}       -- name -> module table
local chains = {}        -- route index -> { {mod=, conf=, name=}, ... }
local early_chain = {}   -- global filters' early_request hooks
engine.filters = filters

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type",
  "unpack", "xpcall", "rawequal", "rawget", "rawset", "rawlen", "setmetatable", "getmetatable",
}

-- The environment a filter runs in: no io, os, load, require, jit, ffi or debug.
function engine.sandbox()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.string = { byte = string.byte, char = string.char, find = string.find, format = string.format,
                 gmatch = string.gmatch, gsub = string.gsub, len = string.len, lower = string.lower,
                 match = string.match, rep = string.rep, reverse = string.reverse, sub = string.sub,
                 upper = string.upper }
  env.table = { concat = table.concat, insert = table.insert, remove = table.remove, sort = table.sort }
  env.math = {}
  for k, v in pairs(math) do env.math[k] = v end
  env.bit = bit
  env.os = { time = os.time, date = os.date, clock = os.clock }
  env.px = px
  env.print = function(...) px.log("info", ...) end
  env._G = env
  return env
end

local KNOWN = {}
for _, p in ipairs(PHASES) do KNOWN[p] = true end

-- Compiles a filter's source; returns the module or nil, error.
function engine.compile(name, source, chunkname)
  local fn, err = loadstring(source, "=" .. (chunkname or name))
  if not fn then return nil, err end
  setfenv(fn, engine.sandbox())
  jit.off(fn, true)  -- interpreted, so the count hook can always stop a runaway loop
  local ok, mod = pcall(fn)
  if not ok then return nil, tostring(mod) end
  if type(mod) ~= "table" then return nil, (chunkname or name) .. ": a filter must return a table of phase functions" end
  for k, v in pairs(mod) do
    if k == "phases" then
      if type(v) ~= "function" then return nil, (chunkname or name) .. ": 'phases' must be a function(conf) returning a list of phases" end
    elseif not KNOWN[k] then return nil, (chunkname or name) .. ": unknown phase '" .. tostring(k) .. "' (phases: " .. table.concat(PHASES, ", ") .. ")" end
    if type(v) ~= "function" then return nil, (chunkname or name) .. ": phase '" .. k .. "' must be a function" end
  end
  return mod
end

function engine.install(name, mod) filters[name] = mod end

-- Builds the filter chain of a route from its (name, config) list: per phase,
-- the functions to call, so a phase walks only the filters that implement it.
-- A filter may say which of its phases a given config needs (phases(conf)),
-- so that a route never enters a phase where the filter would do nothing.
local function wanted(mod, conf)
  if not mod.phases then return nil end
  local ok, list = pcall(mod.phases, conf)
  if not ok or type(list) ~= "table" then return nil end
  local set = {}
  for _, p in pairs(list) do if p then set[p] = true end end
  return set
end

local function build(list)
  local chain = { list = list }
  local want = {}
  for j, f in ipairs(list) do
    local mod = filters[f.name]
    want[j] = mod and wanted(mod, f.conf)
  end
  for i, p in ipairs(PHASES) do
    local fns = {}
    for j, f in ipairs(list) do
      local mod = filters[f.name]
      if mod and mod[p] and (not want[j] or want[j][p]) then
        fns[#fns + 1] = { fn = mod[p], conf = f.conf, name = f.name }
      end
    end
    chain[i - 1] = fns
  end
  return chain
end

function engine.set_chain(index, list)
  local l = {}
  for i, f in ipairs(list) do l[i] = { name = f[1], conf = f[2] } end
  chains[index] = build(l)
end
function engine.clear_chains() chains = {} end
function engine.set_early(names)
  local l = {}
  for i, n in ipairs(names) do l[i] = { name = n, conf = {} } end
  early_chain = build(l)
end

-- Which phases does a route's chain implement? (a bitmask; phases it does not are never entered)
function engine.mask(index)
  local chain = index < 0 and early_chain or chains[index]
  local m = 0
  if not chain then return 0 end
  for _, f in ipairs(chain.list) do
    if not filters[f.name] then m = bit.bor(m, 0x100) end  -- a missing filter: the route fails closed (500)
  end
  for i = 1, #PHASES do
    if #chain[i - 1] > 0 then m = bit.bor(m, bit.lshift(1, i - 1)) end
  end
  return m
end

-- A request object, made once per request by the engine (C++ keeps it in the registry).
function engine.new_req() return setmetatable({ ctx = {} }, Req) end

-- Runs one phase of a route's chain for a request. Returns true when a filter
-- answered (px.respond / px.redirect).
function engine.run(phase, index, req)
  local fns = (index < 0 and early_chain or chains[index])[phase]
  for i = 1, #fns do
    local f = fns[i]
    local r = f.fn(req, f.conf)
    if r ~= nil then
      if r == px.DONE then return true end
      error("filter '" .. f.name .. "' " .. PHASES[phase + 1] .. ": returned " .. tostring(r) ..
            " (return nothing, or px.respond(...))")
    end
  end
  return false
end

return px
