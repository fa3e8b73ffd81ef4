// px::slot16 — the two words of a 16-byte table slot ({key, value}), shared by every worker: read one word with
// acquire, and swap both at once or not at all (cmpxchg16b: -mcx16). The host-wide tables use them
// (core/shared_table.h, cache/store.h).
#pragma once
#include <cstdint>

namespace px::slot16 {

inline uint64_t load(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

inline bool cas(void* slot, uint64_t key0, uint64_t val0, uint64_t key1, uint64_t val1) {
  using u128 = unsigned __int128;
  u128 old = (u128(val0) << 64) | key0, nu = (u128(val1) << 64) | key1;
  return __sync_bool_compare_and_swap(static_cast<u128*>(slot), old, nu);
}

}  // namespace px::slot16
