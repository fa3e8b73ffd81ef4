#include "core/shared_table.h"

#include "core/slot16.h"

#include <openssl/rand.h>
#include <openssl/siphash.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace px {

namespace {
constexpr uint64_t kTick = 1'000'000'000 / 64;  // a counter's expiry unit
constexpr uint64_t kNever = 0xffffffff;

using slot16::cas;
using slot16::load;

// When the state in a slot runs out (ns since the epoch): then the slot is as good as empty.
inline uint64_t runs_out(uint64_t key, uint64_t state) {
  if (key == 0) return 0;
  if (key & SharedTable::kCounter) {
    uint64_t exp = state >> 32;
    return exp == kNever ? std::numeric_limits<uint64_t>::max() : exp * kTick;
  }
  return state;
}

inline uint64_t counter_state(int64_t v, uint64_t exp) {
  return (exp << 32) | static_cast<uint32_t>(static_cast<int32_t>(v));
}
inline int64_t counter_value(uint64_t state) { return static_cast<int32_t>(static_cast<uint32_t>(state)); }
inline int64_t clamp32(int64_t v) {
  return std::clamp<int64_t>(v, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
}
}  // namespace

SharedTable::SharedTable(size_t slots) {
  size_t n = std::bit_ceil(std::max(slots, kWindow));
  slots_ = static_cast<Slot*>(::operator new(n * sizeof(Slot), std::align_val_t(64)));
  memset(static_cast<void*>(slots_), 0, n * sizeof(Slot));
  mask_ = n - 1;
  RAND_bytes(reinterpret_cast<uint8_t*>(seed_), sizeof seed_);
  epoch_ns_ = std::chrono::steady_clock::now().time_since_epoch().count() - 1;  // now() is never 0
}

SharedTable::~SharedTable() { ::operator delete(slots_, std::align_val_t(64)); }

uint64_t SharedTable::key(Kind kind, std::string_view name) const {
  uint64_t h = SIPHASH_24(seed_, reinterpret_cast<const uint8_t*>(name.data()), name.size());
  h = (h & ~kCounter) | kind;
  return h == 0 ? 1 : h;
}

uint64_t SharedTable::now() const {
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count() - epoch_ns_);
}

// Finds the key's slot in its window (or takes a run-out one, or evicts) and swaps in f's new state:
// f(live, state, &next) -> whether to write; a lost race reads the slot again.
template <class F>
void SharedTable::update(uint64_t key, uint64_t now, F&& f) {
  size_t base = key & mask_;
  for (;;) {
    size_t free_at = SIZE_MAX, soonest_at = 0;
    uint64_t free_key = 0, free_state = 0, soonest = std::numeric_limits<uint64_t>::max();
    bool raced = false;
    for (size_t i = 0; i < kWindow; i++) {
      Slot* s = &slots_[(base + i) & mask_];
      uint64_t k = load(&s->key), st = load(&s->state);
      uint64_t out = runs_out(k, st);
      if (k == key) {
        bool live = out > now;
        uint64_t next;
        if (!f(live, st, &next)) return;
        if (cas(s, k, st, key, next)) return;
        raced = true;
        break;
      }
      if (out <= now) {
        if (free_at == SIZE_MAX) free_at = i, free_key = k, free_state = st;
      } else if (out < soonest) {
        soonest = out, soonest_at = i;
      }
    }
    if (raced) continue;
    uint64_t next;
    if (!f(false, 0, &next)) return;
    bool evict = free_at == SIZE_MAX;
    if (evict) {
      Slot* s = &slots_[(base + soonest_at) & mask_];
      free_at = soonest_at, free_key = load(&s->key), free_state = load(&s->state);
    }
    if (cas(&slots_[(base + free_at) & mask_], free_key, free_state, key, next)) {
      if (evict) evictions_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
}

SharedTable::Verdict SharedTable::limit(uint64_t key, uint64_t now, uint64_t interval, uint64_t burst, uint64_t delay) {
  Verdict v{true, 0};
  uint64_t allowance = burst * interval;  // how far ahead of now the bucket may run
  update(key, now, [&](bool live, uint64_t tat, uint64_t* next) {
    uint64_t t = live && tat > now ? tat : now;
    uint64_t ahead = t - now;  // the queue before this request: its excess, in time
    if (ahead > allowance) {
      v = {false, ahead - allowance};
      return false;
    }
    uint64_t free_ahead = delay >= burst ? allowance : delay * interval;
    v = {true, ahead > free_ahead ? ahead - free_ahead : 0};
    *next = t + interval;
    return true;
  });
  return v;
}

int64_t SharedTable::incr(uint64_t key, int64_t by, uint64_t ttl_ns, uint64_t now) {
  int64_t out = 0;
  update(key, now, [&](bool live, uint64_t st, uint64_t* next) {
    uint64_t exp = live ? st >> 32 : ttl_ns ? (now + ttl_ns + kTick - 1) / kTick : kNever;
    out = clamp32((live ? counter_value(st) : 0) + by);
    *next = counter_state(out, exp);
    return true;
  });
  return out;
}

void SharedTable::set(uint64_t key, int64_t value, uint64_t ttl_ns, uint64_t now) {
  update(key, now, [&](bool, uint64_t, uint64_t* next) {
    *next = counter_state(clamp32(value), ttl_ns ? (now + ttl_ns + kTick - 1) / kTick : kNever);
    return true;
  });
}

void SharedTable::erase(uint64_t key, uint64_t now) {
  update(key, now, [&](bool live, uint64_t, uint64_t* next) {
    *next = 0;  // expired at the epoch: the slot is free
    return live;
  });
}

bool SharedTable::get(uint64_t key, uint64_t now, int64_t* out) const {
  size_t base = key & mask_;
  for (size_t i = 0; i < kWindow; i++) {
    const Slot* s = &slots_[(base + i) & mask_];
    uint64_t k = load(&s->key);
    if (k != key) continue;
    uint64_t st = load(&s->state);
    if (load(&s->key) != key || runs_out(key, st) <= now) return false;
    *out = counter_value(st);
    return true;
  }
  return false;
}

}  // namespace px
