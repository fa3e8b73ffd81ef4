// px::proxy balancing: which peer of a pool takes the next request.
// Pure functions over a pool (immutable, from the snapshot) and per-worker
// state, so they can be tested without sockets.
#pragma once
#include <cstdint>
#include <vector>

#include "net/cidr.h"
#include "route/snapshot.h"

namespace px::proxy {

struct PeerLoad {
  bool usable = true;   // resolved, not down (health)
  uint32_t active = 0;  // requests in flight (least_conn)
  uint64_t down_until = 0;
  bool hard_down = false;  // unresolved or failing active checks: never chosen
};

// Returns the chosen peer index or -1. `current` is the smooth weighted round
// robin state (one entry per peer, kept by the caller); `tried` is a bitmask of
// peers this request already tried; `rotate` breaks least_conn ties.
// When every untried peer is only cooling down after passive failures and
// nothing was tried yet, the one whose cool-down ends first is chosen.
long pick_peer(const route::Pool& pool, const std::vector<PeerLoad>& load, std::vector<int64_t>& current,
               uint64_t tried, const net::IpAddr& client, uint64_t rotate);

}  // namespace px::proxy
