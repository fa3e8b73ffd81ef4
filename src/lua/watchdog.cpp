// The time budget of filter code. Start with the comment below.
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "lua/internal.h"

namespace px::lua {

constinit thread_local Current t_cur{};
constinit thread_local char t_err[512];
constinit thread_local uint64_t t_check_deadline = 0;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

namespace {
// ---- the time budget ----
// Filter code is interpreted (the JIT is off for it), so a hook stops it at its
// next instruction wherever it loops. The hook is not set while filters run
// normally (a count hook slows every instruction): a watchdog thread sees a
// phase that has run past its budget and signals the worker, whose handler sets
// a hook that fires at once (lua_sethook may be called asynchronously; LuaJIT's
// own interpreter does it from a SIGINT handler). The hook checks that the same
// phase is still running before it raises the error.

int watchdog_signal() { return SIGRTMIN + 4; }

void budget_hook(lua_State* L, lua_Debug*) {
  lua_sethook(L, nullptr, 0, 0);
  if (t_cur.active && t_cur.eng && t_cur.eng->overrun()) luaL_error(L, "time budget exceeded (runaway filter?)");
}

void on_watchdog_signal(int) {
  int saved = errno;
  if (t_cur.active && t_cur.eng) lua_sethook(t_cur.eng->state(), budget_hook, LUA_MASKCOUNT, 1);
  errno = saved;
}

}  // namespace

void check_hook(lua_State* L, lua_Debug*) {
  if (t_check_deadline && now_ns() > t_check_deadline) luaL_error(L, "time budget exceeded (runaway filter?)");
}

namespace {
struct Watchdog {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Engine*> engines;
  bool running = false;

  void loop() {
    std::unique_lock<std::mutex> lk(mu);
    while (!engines.empty()) {
      uint64_t tick = 20;
      for (Engine* e : engines) tick = std::min(tick, std::max<uint64_t>(1, e->budget_ms() / 4));
      cv.wait_for(lk, std::chrono::milliseconds(tick));
      auto now = std::chrono::steady_clock::now();
      for (Engine* e : engines) e->watch(now);
    }
    running = false;
  }
  void add(Engine* e) {
    static std::once_flag once;
    std::call_once(once, [] {
      struct sigaction sa {};
      sa.sa_handler = on_watchdog_signal;
      sa.sa_flags = SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(watchdog_signal(), &sa, nullptr);
    });
    std::lock_guard<std::mutex> lk(mu);
    engines.push_back(e);
    if (!running) {
      running = true;
      std::thread([this] { loop(); }).detach();
    }
    cv.notify_all();
  }
  void remove(Engine* e) {
    std::lock_guard<std::mutex> lk(mu);
    engines.erase(std::remove(engines.begin(), engines.end(), e), engines.end());
    cv.notify_all();
  }
};
Watchdog& watchdog() {
  static auto* w = new Watchdog;  // never destroyed: its thread may outlive static destructors
  return *w;
}
}  // namespace

void watchdog_add(Engine* e) { watchdog().add(e); }
void watchdog_remove(Engine* e) { watchdog().remove(e); }

void Engine::watch(std::chrono::steady_clock::time_point now) {
  uint64_t s = wd_seq_.load(std::memory_order_acquire);
  if (!s) {
    wd_last_ = 0;
    return;
  }
  if (s != wd_last_) {
    wd_last_ = s;
    wd_since_ = now;
    return;
  }
  if (in_slow_call()) return;  // px's own work (slow_call_begin): judged when it ends
  if (now - wd_since_ >= std::chrono::milliseconds(budget_ms())) {
    // Signalled again on every tick until the phase ends, in case a signal
    // arrived while the state could not take the hook.
    wd_kill_.store(s, std::memory_order_relaxed);
    pthread_kill(thread_, watchdog_signal());
  }
}

}  // namespace px::lua
