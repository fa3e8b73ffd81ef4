#include "upstream/balancer.h"

#include <algorithm>

namespace px::proxy {

long pick_peer(const route::Pool& pool, const std::vector<PeerLoad>& load, std::vector<int64_t>& current,
               uint64_t tried, const net::IpAddr& client, uint64_t rotate) {
  size_t n = load.size();
  auto avail = [&](size_t i) { return !(tried & (uint64_t(1) << i)) && load[i].usable; };
  long best = -1;
  switch (pool.lb) {
    case route::Balance::round_robin: {
      // Smooth weighted round robin (as nginx): even spread, weights honoured.
      int64_t total = 0;
      for (size_t i = 0; i < n; i++) {
        if (!avail(i)) continue;
        int64_t wgt = pool.peers[i].weight;
        current[i] += wgt;
        total += wgt;
        if (best < 0 || current[i] > current[static_cast<size_t>(best)]) best = static_cast<long>(i);
      }
      if (best >= 0) current[static_cast<size_t>(best)] -= total;
      break;
    }
    case route::Balance::least_conn: {
      // Fewest requests in flight per unit of weight; ties rotate.
      size_t start = n ? static_cast<size_t>(rotate % n) : 0;
      for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (!avail(i)) continue;
        if (best < 0) {
          best = static_cast<long>(i);
          continue;
        }
        size_t b = static_cast<size_t>(best);
        if (uint64_t(load[i].active) * pool.peers[b].weight < uint64_t(load[b].active) * pool.peers[i].weight)
          best = static_cast<long>(i);
      }
      break;
    }
    case route::Balance::ip_hash: {
      if (pool.ring.empty()) break;
      uint32_t h = route::hash_bytes(client.b.data(), client.b.size());
      auto it = std::lower_bound(pool.ring.begin(), pool.ring.end(), std::make_pair(h, uint16_t(0)));
      for (size_t k = 0; k < pool.ring.size(); k++, ++it) {
        if (it == pool.ring.end()) it = pool.ring.begin();
        if (avail(it->second)) {
          best = it->second;
          break;
        }
      }
      break;
    }
  }
  if (best < 0 && tried == 0) {
    uint64_t soonest = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
      if (load[i].hard_down) continue;
      if (load[i].down_until < soonest) {
        soonest = load[i].down_until;
        best = static_cast<long>(i);
      }
    }
  }
  return best;
}

}  // namespace px::proxy
