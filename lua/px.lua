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
-- The C side: pxd loads this file with a table of C functions (plain Lua C
-- functions: filter code is interpreted, and from the interpreter these cost a
-- fraction of an FFI call). Each acts on the request being processed by this
-- worker and checks the phase first.
local C = ...

local px = {}
local PHASES = { "early_request", "request", "upstream_peer", "upstream_request", "response", "logging" }
px.phases = PHASES
px.DONE = C.DONE   -- what px.respond and px.redirect return
local DONE, WAIT = C.DONE, C.WAIT

-- The request object handed to phase functions (one per request; its methods
-- are the C functions). req.ctx is a table shared by every phase of this request.
local Req = {}
Req.__index = Req
Req.__metatable = "px request"  -- filters cannot swap a request object's metatable

Req.method = C.method          -- req:method()
Req.path = C.path              -- without the query
Req.query = C.query            -- without the '?', "" when none
Req.host = C.host              -- Host as sent, without the port
Req.client_ip = C.client_ip    -- the real client, behind trusted proxies
Req.sni = C.sni                -- "" without TLS
Req.route = C.route            -- the route's name ("" before routing)
Req.uri = C.uri                -- path and query as sent
Req.scheme = C.scheme          -- "https" when TLS or a trusted X-Forwarded-Proto says so
Req.is_tls = C.is_tls
Req.http_version = C.http_version  -- 1.0, 1.1 or 2 (a number)
Req.is_https = C.is_https      -- scheme() == "https", without a string

Req.header = C.header          -- req:header(name [, i]): the i-th value (0-based), or nil
Req.set_header = C.set_header  -- req:set_header(name, value)
Req.add_header = C.add_header
Req.remove_header = C.remove_header

Req.status = C.status          -- response and logging
Req.from_upstream = C.from_upstream  -- response and logging: the upstream's answer (false: px's or a filter's)
Req.request_id = C.request_id  -- the X-Request-ID px passes upstream
Req.country = C.country        -- the client's country code (pxd.conf geoip_database), or nil
Req.asn = C.asn                -- the client's autonomous system number (geoip_asn_database), or nil
Req.set_status = C.set_status
Req.resp_header = C.resp_header
Req.set_resp_header = C.set_resp_header
Req.add_resp_header = C.add_resp_header
Req.remove_resp_header = C.remove_resp_header
Req.cache_key = C.cache_key            -- request: req:cache_key(key): the route's cache stores this request under key
Req.cache_bypass = C.cache_bypass      -- request: neither answered from the cache nor stored
Req.cache_no_store = C.cache_no_store  -- response: this response is not stored

-- The request methods, for a filter that keeps one in a local at load time
-- (local is_https = px.req.is_https; ... is_https(req)): filter code is
-- interpreted, and req:is_https() looks the method up through the metatable on
-- every call.
px.req = Req

-- Answer the request from the filter (early_request, request); both return px.DONE.
px.respond = C.respond         -- px.respond(status [, headers [, body]])
px.redirect = C.redirect       -- px.redirect(url [, status]): 301, 302 (default), 303, 307 or 308

-- upstream_peer: choose the route's peer by its position (1-based).
px.set_peer = C.set_peer
px.peer_count = C.peer_count

local C_log = C.log
local LEVELS = { error = 0, warn = 1, info = 2, debug = 3 }
function px.log(level, ...)
  local n = LEVELS[level]
  if not n then error("px.log: level must be error, warn, info or debug", 2) end
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  C_log(n, table.concat(parts, " "))
end

local C_now = C.now
local C_path = C.path
px.now = C_now   -- monotonic seconds
px.read_file = C.read_file  -- px.read_file(path): at most 1 MiB, or nil, err; only at top level or in prepare

-- Built-in checks the acl and acme filters use.
-- px.acl_check(list [, authorization]): the verdict, 0 allow, 1 needs
-- credentials (401), 2 denied (403); and whether the request's Authorization
-- header may stay (the list passes it upstream, or the request has none).
px.acl_check = C.acl_check
px.acl_realm = C.acl_realm            -- px.acl_realm(list): the list's realm
px.acme_challenge = C.acme_challenge  -- px.acme_challenge(token): the key authorization, or nil

-- Leaky buckets (nginx limit_req) and counters, exact for the whole host: every worker of this pxd sees the
-- same ones (a lock-free table in pxd's memory: core/shared_table.h).
-- px.limit(zone, key, rate, burst [, delay]): the seconds to wait (0: go now), or nil and the seconds until one
-- passes. key nil: the client's address (as bytes).
px.limit = C.limit
-- px.shared: counters (whole numbers) with an optional expiry, set when the counter is made.
px.shared = { get = C.shared_get, set = C.shared_set, incr = C.shared_incr }

-- Waiting, in the request phase, for a filter that declares `yields = true` (its phase functions then run in a
-- coroutine): the request waits, the worker goes on with others.
px.sleep = C.sleep    -- px.sleep(seconds)
-- Any filter, request phase: `return px.delay(seconds)` ends its turn; the request waits, then the phase's
-- next filter runs (no coroutine needed: rate_limit's delay).
px.delay = C.delay
-- px.reverse_dns(ip): the forward-confirmed PTR name, or nil (yields, like px.fetch).
px.reverse_dns = C.reverse_dns

-- Crypto (BoringSSL): digests and MACs as raw bytes; px.to_hex for text.
px.sha256 = C.sha256                -- px.sha256(s)
px.hmac_sha256 = C.hmac_sha256      -- px.hmac_sha256(key, s)
px.random_bytes = C.random_bytes    -- px.random_bytes(n)
px.to_hex = C.to_hex
px.secure_equal = C.secure_equal    -- constant-time comparison of two strings
px.cidrs = C.cidrs                  -- px.cidrs({"10.0.0.0/8", ...}): a matcher; m:contains(ip)
px.host_secret = C.host_secret      -- 32 random bytes, the same in every worker of this pxd (until it restarts)
px.fetch = C.fetch    -- px.fetch(url [, opts]): { status, headers, body [, multi] } or nil, err

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

-- A read-only view of a table: reads go through, writes fail, and the view's
-- metatable cannot be reached or replaced. `rawset` on a view only changes
-- that view, and every filter has its own.
local function readonly(t, name)
  return setmetatable({}, {
    __index = t,
    __newindex = function(_, k) error(name .. " is read-only (assigning '" .. tostring(k) .. "')", 2) end,
    __metatable = name,
  })
end

-- Strings share one metatable whose __index is the real string table, which
-- px's own code uses: hide it, so that getmetatable("").__index cannot be
-- changed by a filter.
getmetatable("").__metatable = "string"

-- The environment a filter runs in: no io, os, load, require, jit, ffi or debug.
-- Nothing in it is shared with another filter or with px itself, except
-- through read-only views (px, px.req, px.phases).
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
  env.bit = {}
  for k, v in pairs(bit) do env.bit[k] = v end
  env.os = { time = os.time, date = os.date, clock = os.clock }
  local api = {}
  for k, v in pairs(px) do api[k] = v end
  api.req = readonly(Req, "px.req")
  api.phases = readonly(PHASES, "px.phases")
  env.px = readonly(api, "px")
  env.print = function(...) px.log("info", ...) end
  env._G = env
  return env
end

-- px.expression(src): a Lua expression of `req` as a function(req), in a sandbox of its own: for a value a
-- route's config computes per request (rate_limit's "expr:" key). Compile it at a filter's top level or in
-- prepare, not per request.
function px.expression(src)
  if type(src) ~= "string" then error("px.expression: the expression must be a string", 2) end
  local fn, err = loadstring("local req = ...; return " .. src, "=expression")
  if not fn then return nil, (tostring(err):gsub("^expression:%d+: ", "")) end
  setfenv(fn, engine.sandbox())
  jit.off(fn, true)
  return fn
end

local KNOWN = {}
for _, p in ipairs(PHASES) do KNOWN[p] = true end

-- Compiles a filter's source; returns the module or nil, error.
function engine.compile(name, source, chunkname)
  local fn, err = loadstring(source, "=" .. (chunkname or name))
  if not fn then return nil, err end
  setfenv(fn, engine.sandbox())
  jit.off(fn, true)  -- interpreted, so a hook can always stop a runaway loop
  local ok, mod = pcall(fn)
  if not ok then return nil, tostring(mod) end
  if type(mod) ~= "table" then return nil, (chunkname or name) .. ": a filter must return a table of phase functions" end
  for k, v in pairs(mod) do
    if k == "path_prefix" then
      if type(v) ~= "string" or v:sub(1, 1) ~= "/" or v:find("?", 1, true) then
        return nil, (chunkname or name) .. ": 'path_prefix' must be a path starting with '/' (no query)"
      end
    elseif k == "yields" then
      if type(v) ~= "boolean" then return nil, (chunkname or name) .. ": 'yields' must be true or false" end
    elseif k == "phases" or k == "prepare" then
      if type(v) ~= "function" then return nil, (chunkname or name) .. ": '" .. k .. "' must be a function(conf)" end
    elseif k == "config" then
      local bad = type(v) ~= "table" and "must be a table of key = type" or engine.bad_schema(v, "")
      if bad then return nil, (chunkname or name) .. ": 'config' " .. bad end
    elseif not KNOWN[k] then return nil, (chunkname or name) .. ": unknown phase '" .. tostring(k) .. "' (phases: " .. table.concat(PHASES, ", ") .. ")" end
    if k ~= "path_prefix" and k ~= "config" and k ~= "yields" and type(v) ~= "function" then return nil, (chunkname or name) .. ": phase '" .. k .. "' must be a function" end
  end
  return mod
end

function engine.install(name, mod) filters[name] = mod end

-- A filter's declared config (its `config` table) maps each key to a type: "string", "number", "integer",
-- "boolean", "object" (a JSON object with any keys), "array", "acl" (the name of an access list, which
-- pxadmind looks up), or a table: a JSON object with exactly those keys. pxadmind checks a route's configs
-- against it, then runs the filter's prepare, before it writes anything (engine.check_config).
local SHAPES = { string = "a string", number = "a number", integer = "a whole number", boolean = "true or false",
                 object = "an object", array = "an array", acl = "the name of an access list" }

function engine.bad_schema(schema, path)
  for k, t in pairs(schema) do
    if type(k) ~= "string" then return "has a key that is not a string" end
    if type(t) == "table" then
      local bad = engine.bad_schema(t, path .. k .. ".")
      if bad then return bad end
    elseif not SHAPES[t] then
      return "gives '" .. path .. k .. "' the unknown type " .. tostring(t) .. " (types: string, number, integer, " ..
             "boolean, object, array, acl, or a table of keys)"
    end
  end
end

local function is_list(t)  -- a JSON array (an empty table is either)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function shape_ok(v, t)
  if t == "string" or t == "acl" then return type(v) == "string" end
  if t == "number" then return type(v) == "number" end
  if t == "integer" then return type(v) == "number" and v % 1 == 0 end
  if t == "boolean" then return type(v) == "boolean" end
  if t == "object" then return type(v) == "table" and (next(v) == nil or not is_list(v)) end
  return type(v) == "table" and is_list(v)  -- array
end

-- nil, or the offending key's path and the problem. Access lists named go to refs.
local function check_shape(v, schema, path, refs)
  for k, x in pairs(v) do
    local key = path .. tostring(k)
    local t = schema[k]
    if t == nil then
      local known = {}
      for n in pairs(schema) do known[#known + 1] = n end
      table.sort(known)
      return key, "unknown key '" .. key .. "'" ..
                  (#known > 0 and " (known: " .. table.concat(known, ", ") .. ")" or " (it takes no keys here)")
    elseif type(t) == "table" then
      if type(x) ~= "table" or (next(x) ~= nil and is_list(x)) then return key, "'" .. key .. "' must be an object" end
      local f, e = check_shape(x, t, key .. ".", refs)
      if f then return f, e end
    elseif not shape_ok(x, t) then
      return key, "'" .. key .. "' must be " .. SHAPES[t]
    elseif t == "acl" then
      refs[#refs + 1] = x
    end
  end
end

-- A route's config for a filter, as pxadmind checks it before writing (in a scratch state: lua/loader.cpp):
-- its declared shape, then its prepare. Returns nil when it is fine, else the offending key's path ("" for
-- the config as a whole) and the problem; then the access lists it names.
function engine.check_config(name, mod, conf)
  local refs = {}
  if type(conf) ~= "table" or (next(conf) ~= nil and is_list(conf)) then
    return "", name .. ": the config must be a JSON object", refs
  end
  if mod.config then
    local key, err = check_shape(conf, mod.config, "", refs)
    if key then return key, name .. ": " .. err, refs end
  end
  if mod.prepare then
    local ok, err = pcall(mod.prepare, conf)
    if not ok then return "", tostring(err), refs end
  end
  return nil, nil, refs
end

-- Builds the filter chain of a route from its (name, config) list: per phase,
-- the functions to call, so a phase walks only the filters that implement it.
-- A filter may prepare its config once per route (prepare(conf) returns what
-- its phase functions get: checked, with strings built in advance), and may
-- say which of its phases a config needs (phases(conf)), so that a route never
-- enters a phase where the filter would do nothing. A prepare that fails marks
-- the route: it answers 500 (filters fail closed), and the error is logged.
local function wanted(mod, conf)
  if not mod.phases then return nil end
  local ok, list = pcall(mod.phases, conf)
  if not ok or type(list) ~= "table" then return nil end
  local set = {}
  for _, p in pairs(list) do if p then set[p] = true end end
  return set
end

-- Per filter and phase: { calls, seconds, errors, answers }, kept by engine.run_timed (pxd's metrics read
-- them through engine.stats on the worker's tick). `current` is the entry running now, so that an
-- error is counted against its filter (engine.failed). A traced request (pxctl trace) gets each
-- filter's { name, seconds, verdict } in trace_log, taken after the phase (engine.take_trace).
local stats = {}
local current
local tracing, trace_log = false, {}
local function stat_for(name, phase)
  local s = stats[name]
  if not s then s = {}; stats[name] = s end
  local t = s[phase]
  if not t then t = { 0, 0, 0, 0 }; s[phase] = t end
  return t
end
function engine.stats() return stats end
function engine.failed()
  if current then
    current.stat[3] = current.stat[3] + 1
    if tracing then trace_log[#trace_log + 1] = { current.name, 0, "error" } end
  end
  current = nil
end
function engine.take_trace()
  local t = trace_log
  trace_log = {}
  return t
end

local function build(list, route)
  local chain = { list = list }
  local want = {}
  for j, f in ipairs(list) do
    local mod = filters[f.name]
    if mod and mod.prepare then
      local ok, res = pcall(mod.prepare, f.conf, route)
      if ok then
        if res ~= nil then f.conf = res end
      else
        f.failed = true
        C_log(0, "filter '" .. f.name .. "' on route '" .. (route or "?") .. "': its config is refused: " ..
                 tostring(res) .. " (the route answers 500)")
      end
    end
    want[j] = mod and wanted(mod, f.conf)
  end
  for i, p in ipairs(PHASES) do
    local fns = {}
    for j, f in ipairs(list) do
      local mod = filters[f.name]
      if mod and mod[p] and not f.failed and (not want[j] or want[j][p]) then
        fns[#fns + 1] = { fn = mod[p], conf = f.conf, name = f.name, prefix = mod.path_prefix,
                          yields = mod.yields == true or nil, stat = stat_for(f.name, i - 1) }
      end
    end
    chain[i - 1] = fns
  end
  return chain
end

function engine.set_chain(index, list, route)
  local l = {}
  for i, f in ipairs(list) do l[i] = { name = f[1], conf = f[2] } end
  chains[index] = build(l, route)
end
function engine.clear_chains() chains = {} end
-- A route's filters in one phase ({ fn, conf, name, prefix, ... } each): what px may run in C++ instead.
function engine.phase_fns(index, phase) return chains[index] and chains[index][phase] end

-- The path prefixes the global (early_request) filters declared, for px to check
-- before it enters Lua at all; nil when one of them runs for every path.
function engine.early_prefixes()
  local out = {}
  for _, f in ipairs(early_chain[0]) do
    if not f.prefix then return nil end
    out[#out + 1] = f.prefix
  end
  return out
end
function engine.set_early(names)
  local l = {}
  for i, n in ipairs(names) do l[i] = { name = n, conf = {} } end
  early_chain = build(l, "(global)")
end

-- Which phases does a route's chain implement? (a bitmask; phases it does not are never entered)
function engine.mask(index)
  local chain = index < 0 and early_chain or chains[index]
  local m = 0
  if not chain then return 0 end
  for _, f in ipairs(chain.list) do
    -- a missing filter, or one that refused its config: the route fails closed (500)
    if not filters[f.name] or f.failed then m = bit.bor(m, 0x100) end
  end
  for i = 1, #PHASES do
    if #chain[i - 1] > 0 then m = bit.bor(m, bit.lshift(1, i - 1)) end
  end
  return m
end

-- A request object. The engine keeps one per pooled request state and reuses it:
-- `fresh` says a new request starts, and whatever the last one left goes.
function engine.new_req() return setmetatable({ ctx = {} }, Req) end

-- A pooled request object: `fresh` says a new request starts, and whatever the last one left goes
-- (engine.run and engine.run_timed).
local function renew(req)
  local k = next(req)
  if k ~= "ctx" or next(req, k) ~= nil or next(req.ctx) ~= nil then
    for key in pairs(req) do rawset(req, key, nil) end
    rawset(req, "ctx", {})
  end
end

-- A filter that declares `yields = true` runs its phase functions in a coroutine of their own, so that it may
-- wait (px.sleep, px.fetch: the C function yields, the stream waits without blocking the worker, then
-- Engine::resume resumes it). Others are called plainly. `suspended[req]` holds a waiting filter's place.
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local suspended = {}
local C_traceback = C.traceback
local FAILED = {}    -- a call's error, with its traceback made inside the coroutine
local FINISHED = {}  -- a pooled coroutine's "this call is over" (it stays alive for the next call)
local function body(phase, f, req, conf)  -- `phase`, then `f`, for locate(): not a tail call, so the frame stays
  local r = f.fn(req, conf)
  return r
end
-- The body of a pooled coroutine: one filter call after another. A call's end is yielded with FINISHED; a
-- wait inside a call is a yield from C with nothing (px.fetch), resumed with what it waited for.
local function loop(f, phase, req, conf)
  while true do
    local ok, r = xpcall(body, C_traceback, phase, f, req, conf)
    if ok then
      f, phase, req, conf = co_yield(FINISHED, r)
    else
      f, phase, req, conf = co_yield(FINISHED, FAILED, r)
    end
  end
end
local idle_cos, idle_n = {}, 0
local function co_get()
  if idle_n == 0 then return co_create(loop) end
  local co = idle_cos[idle_n]
  idle_cos[idle_n] = nil
  idle_n = idle_n - 1
  return co
end

local function bad_return(f, phase, r)
  error("filter '" .. f.name .. "' " .. PHASES[phase + 1] .. ": returned " .. tostring(r) ..
        " (return nothing, or px.respond(...))")
end

-- After a coroutine ran (ok, tag, r, err from coroutine.resume): "wait", or r (nil or px.DONE).
local function settle(co, ok, tag, r, err, f, phase, index, req, i)
  if not ok then error({ tostring(tag) }) end
  if tag ~= FINISHED then
    suspended[req] = { co, f, phase, index, i }
    return "wait"
  end
  if idle_n < 64 then
    idle_n = idle_n + 1
    idle_cos[idle_n] = co
  end
  if r == FAILED then error({ err }) end
  return r
end

-- A yielding filter's call, in a pooled coroutine: what it returned, or "wait".
local function call_yielding(f, phase, index, req, i)
  local co = co_get()
  local ok, t, a, b = co_resume(co, f, phase, req, f.conf)
  return settle(co, ok, t, a, b, f, phase, index, req, i)
end

-- A filter returned px.delay(...): the stream waits, then the chain goes on after it.
local function park(req, f, phase, index, i)
  suspended[req] = { false, f, phase, index, i }
  return "wait"
end

local run_from

-- The stream's wait is over: the waiting filter goes on with what it waited for (...), then the rest of the
-- phase's chain.
function engine.resume(req, ...)
  local s = suspended[req]
  suspended[req] = nil
  local co, f, phase, index, i = s[1], s[2], s[3], s[4], s[5]
  if co then
    local ok, t, a, b = co_resume(co, ...)
    local r = settle(co, ok, t, a, b, f, phase, index, req, i)
    if r == "wait" then return r end
    if r ~= nil then
      if r == DONE then
        f.stat[4] = f.stat[4] + 1  -- an answer after a wait (forward_auth's refusals): counted as run_timed counts
        return true
      end
      if r == WAIT then return park(req, f, phase, index, i) end
      bad_return(f, phase, r)
    end
  end
  return run_from(phase, index, req, false, i + 1)
end

-- The request ended while a filter waited: its coroutine is let go.
function engine.cancel(req) suspended[req] = nil end

-- engine.run: runs one phase of a route's chain for a request; returns true when a filter answered
-- (px.respond / px.redirect), "wait" when one waits. The path every request takes: nothing but the calls
-- (run_timed is the one for metrics and traces). engine.resume runs the rest, from filter `start` on.
run_from = function(phase, index, req, fresh, start)
  if fresh then renew(req) end
  local fns = (index < 0 and early_chain or chains[index])[phase]
  for i = start or 1, #fns do
    local f = fns[i]
    local prefix = f.prefix
    local r
    if not prefix or C_path(req):sub(1, #prefix) == prefix then
      if f.yields then
        r = call_yielding(f, phase, index, req, i)
        if r == "wait" then return r end
      else
        r = f.fn(req, f.conf)
      end
    end
    if r ~= nil then
      if r == DONE then return true end
      if r == WAIT then return park(req, f, phase, index, i) end
      bad_return(f, phase, r)
    end
  end
  return false
end

engine.run = run_from

-- The same, timing each filter: for pxd's metrics (counts per filter and phase), or for a traced
-- request (each filter's verdict and time).
function engine.run_timed(phase, index, req, fresh, trace)
  if fresh then renew(req) end
  local fns = (index < 0 and early_chain or chains[index])[phase]
  current = nil
  tracing = trace
  for i = 1, #fns do
    local f = fns[i]
    local prefix = f.prefix
    local r
    if not prefix or C_path(req):sub(1, #prefix) == prefix then
      current = f
      local t0 = C_now()
      if f.yields then
        r = call_yielding(f, phase, index, req, i)
      else
        r = f.fn(req, f.conf)
      end
      local dt = C_now() - t0
      if trace then
        trace_log[#trace_log + 1] = { f.name, dt, r == DONE and "answered" or (r == "wait" or r == WAIT) and "waits" or "next" }
      else
        local st = f.stat
        st[1] = st[1] + 1
        st[2] = st[2] + dt
        if r == DONE then st[4] = st[4] + 1 end
      end
    elseif trace then
      trace_log[#trace_log + 1] = { f.name, 0, "skipped (path_prefix " .. prefix .. ")" }
    end
    if r ~= nil then
      current = nil
      if r == DONE then return true end
      if r == "wait" then return r end
      if r == WAIT then return park(req, f, phase, index, i) end
      bad_return(f, phase, r)
    end
  end
  current = nil
  return false
end

return px
