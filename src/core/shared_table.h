// px::SharedTable — small numeric state shared by every worker of a pxd, exact and without a lock: the
// leaky buckets of rate limits (px.limit, the rate_limit filter) and host-wide counters (px.shared).
//
// Why one table every worker writes, and not per-worker state with clients steered to workers: a limit's key
// is often not the TCP peer (a header, the route, the client X-Forwarded-For names behind a trusted proxy),
// and steering by source address puts every client behind one NAT or CDN address, and every loopback
// benchmark, on one worker. Here each operation is a few loads and one 16-byte compare-and-swap
// (cmpxchg16b) on the key's slot: no lock, no system call, and a cache line moves between cores only when
// two workers touch the same key at once.
//
// Slots are {key, state}, 16 bytes, open-addressed in windows of kWindow slots. A key is a seeded SipHash of
// the caller's name for it (a zone and a client address, a counter's name), so that nobody outside can aim
// two names at one slot; its top bit says which kind of state the slot holds:
//   - a limit's state is its bucket's theoretical arrival time (GCRA): ns since the table's epoch. nginx's
//     limit_req keeps (excess, last); this is the same bucket in one word.
//   - a counter's state is its value (int32) and its expiry (1/64 s since the epoch; all ones: never).
// A slot whose state has run out (a drained bucket, an expired counter) is as good as empty: any key may take
// it. When a window holds no such slot, the entry that runs out soonest is evicted (counted): the table's size
// (pxd.conf shared_slots) bounds memory the way nginx's zone size does.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace px {

class SharedTable {
 public:
  static constexpr size_t kWindow = 16;
  explicit SharedTable(size_t slots);  // rounded up to a power of two, at least kWindow
  ~SharedTable();
  SharedTable(const SharedTable&) = delete;
  SharedTable& operator=(const SharedTable&) = delete;

  enum Kind : uint64_t { kLimit = 0, kCounter = uint64_t(1) << 63 };
  uint64_t key(Kind kind, std::string_view name) const;
  // Nanoseconds since the table's epoch (a steady clock).
  uint64_t now() const;

  // A leaky bucket (nginx limit_req): one request every `interval` ns, `burst` more queued, the first `delay`
  // of those without waiting (nodelay: delay >= burst). ok: the request may go, after `wait` ns; not ok: it
  // is refused, and one would pass again in `wait` ns.
  struct Verdict {
    bool ok;
    uint64_t wait;
  };
  Verdict limit(uint64_t key, uint64_t now, uint64_t interval, uint64_t burst, uint64_t delay);

  // Counters: whole numbers in int32 (an increment saturates), with an optional expiry set when the counter
  // is made (ttl_ns 0: never). incr returns the new value.
  int64_t incr(uint64_t key, int64_t by, uint64_t ttl_ns, uint64_t now);
  bool get(uint64_t key, uint64_t now, int64_t* out) const;
  void set(uint64_t key, int64_t value, uint64_t ttl_ns, uint64_t now);
  void erase(uint64_t key, uint64_t now);

  size_t slots() const { return mask_ + 1; }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct alignas(16) Slot {
    uint64_t key, state;
  };
  template <class F>
  void update(uint64_t key, uint64_t now, F&& f);
  Slot* slots_;
  size_t mask_;
  uint64_t seed_[2];
  int64_t epoch_ns_;
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace px
