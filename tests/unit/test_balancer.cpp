#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <map>
#include <string>

#include "upstream/balancer.h"

using namespace px;
using namespace px::proxy;

static route::Pool pool_of(std::vector<uint32_t> weights, route::Balance lb) {
  route::Pool p;
  p.lb = lb;
  for (size_t i = 0; i < weights.size(); i++) {
    route::PeerAddr a;
    a.key = "10.0.0." + std::to_string(i + 1) + ":80";
    a.weight = weights[i];
    p.peers.push_back(a);
  }
  if (lb == route::Balance::ip_hash) {
    for (size_t i = 0; i < p.peers.size(); i++)
      for (uint32_t v = 0; v < 64 * p.peers[i].weight; v++) {
        std::string k = p.peers[i].key + "#" + std::to_string(v);
        p.ring.emplace_back(route::hash_bytes(k.data(), k.size()), static_cast<uint16_t>(i));
      }
    std::sort(p.ring.begin(), p.ring.end());
  }
  return p;
}

static net::IpAddr ip(const char* s) {
  net::IpAddr a;
  net::IpAddr::parse(s, &a);
  return a;
}

TEST_CASE("smooth weighted round robin interleaves like nginx") {
  auto pool = pool_of({5, 1, 1}, route::Balance::round_robin);
  std::vector<PeerLoad> load(3);
  std::vector<int64_t> cur(3, 0);
  std::string seq;
  for (int i = 0; i < 7; i++) seq += char('a' + pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0));
  CHECK(seq == "aabacaa");
}

TEST_CASE("round robin skips unusable and already tried peers") {
  auto pool = pool_of({1, 1, 1}, route::Balance::round_robin);
  std::vector<PeerLoad> load(3);
  std::vector<int64_t> cur(3, 0);
  load[1].usable = false;
  for (int i = 0; i < 10; i++) CHECK(pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0) != 1);
  CHECK(pick_peer(pool, load, cur, 0b101, ip("1.2.3.4"), 0) == -1);
}

TEST_CASE("when every peer is cooling down, the first to come back is tried") {
  auto pool = pool_of({1, 1}, route::Balance::round_robin);
  std::vector<PeerLoad> load(2);
  std::vector<int64_t> cur(2, 0);
  load[0] = PeerLoad{false, 0, 500, false};
  load[1] = PeerLoad{false, 0, 300, false};
  CHECK(pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0) == 1);
  load[1].hard_down = true;  // failing health checks are never overridden
  CHECK(pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0) == 0);
  CHECK(pick_peer(pool, load, cur, 0b01, ip("1.2.3.4"), 0) == -1);
}

TEST_CASE("least connections per unit of weight") {
  auto pool = pool_of({1, 2, 1}, route::Balance::least_conn);
  std::vector<PeerLoad> load(3);
  std::vector<int64_t> cur(3, 0);
  load[0].active = 2;
  load[1].active = 3;  // 1.5 per unit of weight
  load[2].active = 1;
  CHECK(pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0) == 2);
  load[2].active = 2;
  CHECK(pick_peer(pool, load, cur, 0, ip("1.2.3.4"), 0) == 1);
}

TEST_CASE("ip_hash: one client sticks to one peer, many clients spread, a down peer is skipped") {
  auto pool = pool_of({1, 1, 1}, route::Balance::ip_hash);
  std::vector<PeerLoad> load(3);
  std::vector<int64_t> cur(3, 0);
  std::map<long, int> counts;
  for (int i = 0; i < 300; i++) {
    std::string a = "198.51." + std::to_string(i / 250) + "." + std::to_string(i % 250);
    long p = pick_peer(pool, load, cur, 0, ip(a.c_str()), 0);
    CHECK(p == pick_peer(pool, load, cur, 0, ip(a.c_str()), 7));
    counts[p]++;
  }
  CHECK(counts.size() == 3);
  for (auto& kv : counts) CHECK(kv.second > 50);
  long first = pick_peer(pool, load, cur, 0, ip("203.0.113.5"), 0);
  load[static_cast<size_t>(first)].usable = false;
  long second = pick_peer(pool, load, cur, 0, ip("203.0.113.5"), 0);
  CHECK(second != first);
  CHECK(second >= 0);
}

#include "upstream/retry.h"

TEST_CASE("retry policy: where a failed attempt may go next") {
  using px::proxy::Fail;
  using px::proxy::Retry;
  using px::proxy::retry_policy;
  using px::proxy::RetryFacts;
  RetryFacts refused;  // connect refused: the request never left
  refused.why = Fail::connect;
  refused.untried_left = true;
  CHECK(retry_policy(refused) == Retry::other_peer);
  refused.untried_left = false;
  CHECK(retry_policy(refused) == Retry::no);  // never the same peer again for a refused connect
  refused.untried_left = true;
  refused.idempotent = false;
  refused.has_body = true;  // a POST that never left may go elsewhere too
  CHECK(retry_policy(refused) == Retry::other_peer);

  RetryFacts stale;  // a reused keep-alive connection the peer had closed
  stale.why = Fail::closed;
  stale.reused = true;
  stale.request_sent = true;
  stale.idempotent = true;
  stale.untried_left = true;
  CHECK(retry_policy(stale) == Retry::other_peer);  // an untried peer first
  stale.untried_left = false;
  CHECK(retry_policy(stale) == Retry::same_peer_fresh);
  stale.fresh_retry_used = true;
  CHECK(retry_policy(stale) == Retry::no);  // only once
  stale.fresh_retry_used = false;
  stale.got_bytes = true;
  CHECK(retry_policy(stale) == Retry::no);  // some answer arrived
  stale.got_bytes = false;
  stale.idempotent = false;
  CHECK(retry_policy(stale) == Retry::no);  // a POST that may have been processed
  stale.idempotent = true;
  stale.has_body = true;
  CHECK(retry_policy(stale) == Retry::no);  // its body cannot be replayed
  stale.has_body = false;
  stale.head_sent = true;
  stale.untried_left = true;
  CHECK(retry_policy(stale) == Retry::no);  // the client has the head already

  RetryFacts h2refused;  // an HTTP/2 peer refused the stream (REFUSED_STREAM, above its GOAWAY): never processed
  h2refused.why = Fail::refused;
  h2refused.request_sent = true;
  h2refused.idempotent = false;
  h2refused.has_body = true;
  h2refused.untried_left = true;
  CHECK(retry_policy(h2refused) == Retry::other_peer);  // even a POST with a body
  h2refused.untried_left = false;
  h2refused.fresh_retry_used = true;
  CHECK(retry_policy(h2refused) == Retry::same_peer_fresh);  // the same peer, on a connection not going away

  RetryFacts fresh_closed = stale;  // a new connection closed without answering
  fresh_closed.head_sent = false;
  fresh_closed.reused = false;
  CHECK(retry_policy(fresh_closed) == Retry::other_peer);
  fresh_closed.untried_left = false;
  CHECK(retry_policy(fresh_closed) == Retry::no);

  RetryFacts slow = stale;
  slow.head_sent = false;
  slow.why = Fail::read_timeout;
  CHECK(retry_policy(slow) == Retry::no);  // never doubles the wait
  RetryFacts timeout_connect = refused;
  timeout_connect.why = Fail::connect_timeout;
  CHECK(retry_policy(timeout_connect) == Retry::other_peer);
  RetryFacts bad = stale;
  bad.head_sent = false;
  bad.why = Fail::bad_response;
  bad.got_bytes = true;
  CHECK(retry_policy(bad) == Retry::no);
}
