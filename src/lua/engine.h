// px::lua — the filter engine: one LuaJIT state per worker. Start here, and
// with lua/px.lua (the API filters see) and man/px-filters.7.
//
// A route's filters run in six phases (see Phase). The engine enters Lua only
// for the phases some filter of the route implements (a bitmask per route,
// computed when a snapshot is installed), so a route without filters costs a
// branch. Global filters may declare a path prefix, checked before Lua. Lua is
// reached with one lua_pcall per phase; the API's C functions act on the
// "current" request (a thread-local set around the call) and check the phase,
// refusing with "px.CALL: not allowed in phase P". Request objects and filter
// state are pooled per worker.
//
// Safety: filter chunks run with the JIT off (so a hook can always interrupt
// them) under a wall-clock budget per phase, enforced by a watchdog thread that
// signals the worker to set the hook only when a phase overruns; the state's
// allocator enforces a memory limit. An error, a blown budget or memory
// exhaustion answers 500 (if the head has not gone out), logs the traceback with the filter
// and route, counts it, and the worker goes on.
#pragma once
#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lua/request_view.h"

struct lua_State;

namespace px {
struct Config;
class SharedTable;
}  // namespace px

namespace px::http {
struct Head;
class HeadWriter;
}  // namespace px::http

namespace px::route {
class Snapshot;
struct Route;
}  // namespace px::route

namespace px::lua {

enum Phase : uint8_t { kEarly = 0, kRequest, kPeer, kUpstreamRequest, kResponse, kLogging, kPhases };

// What running a phase's filters came to.
enum class Verdict : int8_t {
  // Every filter returned normally: px goes on with the request. Changes they
  // made (header edits, a status, a peer) are in RequestView::fs.
  next = 0,
  // A filter answered the request itself (px.respond, px.redirect: early_request
  // and request only): fs->respond_* hold the answer; px sends it and does not
  // go upstream.
  answered = 1,
  // A filter failed (an error, a blown budget, memory exhausted, a nonsense
  // return value): logged with the traceback and counted; px answers 500 if the
  // response head has not gone out, and the worker goes on.
  failed = -1,
  // A filter waits (px.sleep, px.fetch; request phase only): the stream waits for what fs->wait names, then
  // calls Engine::resume, which comes to one of these again.
  wait = 2,
};
const char* phase_name(int p);
inline constexpr uint16_t kMissingFilter = 0x100;  // a route names a filter that is not loaded

// One filter's count in one phase (kept only while timing is on: pxd's metrics).
struct FilterStat {
  uint64_t calls = 0, errors = 0, answers = 0;  // answers: requests the filter answered itself
  double seconds = 0;
};
using FilterStats = std::vector<std::pair<std::string, std::array<FilterStat, kPhases>>>;

// A traced request (RequestView::trace): one filter phase function's run.
struct FilterTrace {
  std::string filter;
  uint8_t phase = 0;
  std::string verdict;  // next, answered, error
  double ms = 0;
};

// A filter file as the engine loaded it (published in pxd's status file).
struct FilterInfo {
  std::string name, path;
  bool ok = false;
  std::string error;
};

// A built-in filter that px runs in C++ when a route's config allows it: the same behaviour as its Lua file,
// which stays the reference and runs in every other case (a traced request, an edited copy in filters_dir, a
// config the C++ does not cover). A route's request phase runs in C++ only when every filter of it can
// (native.cpp): rate_limit unless its key is an expr:, forward_auth without its cache.
struct NativeFilter {
  enum Kind : uint8_t { kRateLimit, kForwardAuth };
  Kind kind = kRateLimit;
  size_t stat = 0;  // its counts: Engine::native_stats_
  // rate_limit
  enum Key : uint8_t { kClient, kRoute, kHeader };
  std::string zone, header;  // header: the key's field name (key "header:NAME")
  Key key = kClient;
  uint64_t interval = 1, burst = 0, delay = 0;  // ns between requests; queued; of those, sent at once
  int status = 429;
  bool dry_run = false;
  // forward_auth
  std::string url;
  std::vector<std::string> copy, forward;  // copy_headers; request_headers
  uint64_t timeout_ms = 0;
};

class Engine {
 public:
  ~Engine();
  // Creates the state, loads lua/px.lua and every filter. Filter errors are
  // also counted in *error_counter (read by another thread).
  bool init(const Config& cfg, std::atomic<uint64_t>* error_counter, std::string* error);
  // Binds each route of a new snapshot to its filter chain; fills masks (per
  // route index). Both must outlive the next install(): a reload of the
  // filters binds them again and refreshes the masks.
  void install(const route::Snapshot& snap, std::vector<uint16_t>* masks);
  uint16_t early_mask() const { return early_mask_; }
  // Does a request for this target enter early_request? (global filters may
  // declare path_prefix: px checks it here, before entering Lua at all)
  bool early_wants(std::string_view target) const {
    if (!early_gated_) return true;
    for (const auto& p : early_prefixes_)
      if (target.substr(0, p.size()) == p) return true;
    return false;
  }
  // Runs a phase over a request. The verdict: see Verdict.
  Verdict run(Phase p, int route_index, RequestView& v);
  // A phase answered Verdict::wait: v.fs->wait says for what (a time, or an outbound request), and the stream
  // waits for it without blocking the worker, then resumes the phase here (r: the fetch's answer, or nullptr
  // when it was cancelled or was a sleep). The waiting filter goes on, then the rest of the phase's chain.
  Verdict resume(Phase p, RequestView& v, const FetchResult* r);
  // The wait is abandoned (the client left): the waiting filter is let go, never resumed.
  void cancel(RequestView& v);
  // px.fetch: may this route's filters call `url`? Only an origin (scheme, host, port) that a string of its
  // filter configs names (the operator wrote it there).
  bool fetch_allowed(const route::Route* r, std::string_view url) const;
  // The stream ended: its filter state goes back to the pool.
  void done(RequestView& v);
  // (Re)loads filter sources; a failing one keeps its previous version.
  void load(const std::vector<std::pair<std::string, std::string>>& files);  // (path, source)
  const std::vector<FilterInfo>& filters() const { return infos_; }
  // After a spike: a full collection, and fewer pooled filter states.
  void collect_garbage();
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }
  // Time every filter phase function (two clock reads each) and count calls and errors per filter.
  void set_timing(bool on) { timing_ = on; }
  // The counts so far (since the engine started), per filter name.
  void filter_stats(FilterStats* out);
  // After run() for a traced request: what each filter of the phase did (appended to *out).
  void take_trace(Phase p, std::vector<FilterTrace>* out);

  // The budget watchdog (another thread): is this worker stuck in one phase?
  lua_State* state() const { return L_; }
  uint64_t budget_ms() const {
    return wd_budget_ms_.load(std::memory_order_relaxed) + wd_credit_ms_.load(std::memory_order_relaxed);
  }
  // Around px's own slow work inside a phase (verifying a password: yescrypt is
  // slow on purpose): that time is not the filter's, up to kMaxCreditMs per
  // phase, so a busy machine does not turn a good password into a 500 and a
  // filter calling it in a loop is still stopped.
  static constexpr uint64_t kMaxCreditMs = 1000;
  void slow_call_begin() {
    if (wd_credit_ms_.load(std::memory_order_relaxed) < kMaxCreditMs) wd_slow_.store(true, std::memory_order_relaxed);
  }
  void slow_call_end(uint64_t spent_ms) {
    if (!wd_slow_.load(std::memory_order_relaxed)) return;  // past the cap: the time counted
    uint64_t c = wd_credit_ms_.load(std::memory_order_relaxed) + spent_ms;
    wd_credit_ms_.store(c < kMaxCreditMs ? c : kMaxCreditMs, std::memory_order_relaxed);
    wd_kill_.store(0, std::memory_order_relaxed);  // a kill decided just before the call is reconsidered
    wd_slow_.store(false, std::memory_order_release);
  }
  bool in_slow_call() const { return wd_slow_.load(std::memory_order_acquire); }
  void watch(std::chrono::steady_clock::time_point now);
  bool overrun() const {
    uint64_t s = wd_seq_.load(std::memory_order_relaxed);
    return s && wd_kill_.load(std::memory_order_relaxed) == s;
  }

 private:
  void enter(uint64_t budget_ms) {
    wd_budget_ms_.store(budget_ms, std::memory_order_relaxed);
    wd_credit_ms_.store(0, std::memory_order_relaxed);
    wd_seq_.store(++wd_count_, std::memory_order_release);
  }
  void leave() { wd_seq_.store(0, std::memory_order_relaxed); }
  bool compile(const std::string& name, const std::string& path, const std::string& src, std::string* err);
  bool call_filter_code(int nargs, const char* what);
  Verdict call_phase(Phase p, RequestView& v, int nargs, int msgh);
  // native.cpp: route i's request phase in C++ when every filter of it can run so (else native_[i] stays
  // empty); and running it, from filter `from` on.
  void bind_native(size_t i);
  Verdict run_native(const std::vector<NativeFilter>& chain, size_t from, RequestView& v);
  Verdict auth_answer(const NativeFilter& c, RequestView& v, const FetchResult* r);
  lua_State* L_ = nullptr;
  std::atomic<uint64_t>* error_counter_ = nullptr;
  int new_req_ref_ = -1, compile_ref_ = -1, install_ref_ = -1, chain_ref_ = -1, mask_ref_ = -1, early_ref_ = -1,
      clear_ref_ = -1, early_prefixes_ref_ = -1, failed_ref_ = -1, stats_ref_ = -1, run_timed_ref_ = -1,
      take_trace_ref_ = -1, resume_ref_ = -1, cancel_ref_ = -1;
  uint16_t early_mask_ = 0;
  bool timing_ = false;
  bool early_gated_ = false;
  std::vector<std::string> early_prefixes_;
  uint64_t budget_ms_ = 50;
  std::atomic<uint64_t> errors_{0};  // read by the main thread for the status file
  std::vector<std::unique_ptr<FilterState>> free_states_;
  std::vector<FilterInfo> infos_;
  std::vector<std::string> global_;
  const route::Snapshot* snap_ = nullptr;
  std::vector<uint16_t>* masks_ = nullptr;
  std::vector<std::vector<std::string>> fetch_origins_;           // per route index: the origins px.fetch may reach
  std::vector<std::vector<NativeFilter>> native_;                 // per route index: its request phase in C++, or empty
  std::vector<std::pair<std::string, FilterStat>> native_stats_;  // per native filter (request phase), kept
  int phase_fns_ref_ = -1;
  // Watchdog state: the phase running (a sequence number, 0 when none), the one
  // it found overrunning, and what only the watchdog thread touches.
  std::atomic<uint64_t> wd_seq_{0}, wd_kill_{0}, wd_budget_ms_{50}, wd_credit_ms_{0};
  std::atomic<bool> wd_slow_{false};
  uint64_t wd_count_ = 0, wd_last_ = 0;
  std::chrono::steady_clock::time_point wd_since_;
  pthread_t thread_{};
  bool watched_ = false;

 public:
  size_t mem_used = 0, mem_limit = 0;
  SharedTable* shared = nullptr;  // the host's (px.shared, px.limit); nullptr: a scratch one per thread
};

// Header values after filter edits: the headers of `orig` whose names no edit
// touches, then each edited name's final values (set/add/remove in order).
std::vector<std::pair<std::string, std::string>> apply_edits(
    const std::vector<std::pair<std::string, std::string>>& orig, const std::vector<HeaderEdit>& edits);
// The same for a parsed head, without allocating: writes a field for the final
// values of every edited name (the caller skips edited names itself).
void append_edited(http::HeadWriter& out, const http::Head& h, const std::vector<HeaderEdit>& edits);
// The same fields, to any codec: `field(ctx, name, value)` for each.
using FieldFn = void (*)(void* ctx, std::string_view name, std::string_view value);
void each_edited(const http::Head& h, const std::vector<HeaderEdit>& edits, FieldFn field, void* ctx);

// Loads the filter files of the built-in and configured directories (later
// directories override earlier ones by name): (path, source) pairs.
std::vector<std::pair<std::string, std::string>> read_filter_files(const Config& cfg);
// Checks one filter file in a scratch state (pxctl filter check). Empty = fine.
std::string check_filter(const std::string& path, const std::string& source, const std::string& lua_dir);
// A route's config for one filter, checked in a scratch state as pxadmind does before it writes: the shape the
// filter declares (its `config` table: unknown keys and wrong types), then its prepare. `error` empty: fine.
struct ConfigCheck {
  std::string key;                // the config key at fault, as a path ("hsts.max_age"); "" for the whole config
  std::string error;              // the problem, naming the filter
  std::vector<std::string> acls;  // access lists the config names (pxadmind checks that they are stored)
  bool filter_broken = false;     // the filter file itself does not compile
};
ConfigCheck check_config(const std::string& path, const std::string& source, const std::string& config_json,
                         const std::string& lua_dir);
// pxctl filter test: the filter (a built-in's name, or a path to a .lua file) with this config, run with the
// real engine and phases over requests recorded as JSON lines (method, uri, host, headers, client, tls, and
// optionally the upstream's response: {status, headers}); nothing is waited for or called. Returns one JSON
// line per request: each phase's verdict, answer and waits, and the header edits; "" with *error on failure.
std::string test_filter(const std::string& filter, const std::string& config_json, const std::string& requests,
                        std::string* error);
std::string builtin_filters_dir();
// A filter's name: its file's, without the directory and ".lua".
std::string filter_name(const std::string& path);
// A filter file's source; false when it cannot be read.
bool read_source(const std::string& path, std::string* out);
std::string lua_dir();

}  // namespace px::lua
