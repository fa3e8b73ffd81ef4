#include "upstream/retry.h"

namespace px::proxy {

Retry retry_policy(const RetryFacts& f) {
  if (f.head_sent || f.why == Fail::read_timeout) return Retry::no;
  if (f.why == Fail::refused)  // never processed: anywhere, the same peer included (on another connection)
    return f.untried_left ? Retry::other_peer : Retry::same_peer_fresh;
  bool replayable = !f.request_sent || (f.why == Fail::closed && !f.got_bytes && f.idempotent && !f.has_body);
  if (!replayable) return Retry::no;
  bool stale = f.reused && f.why == Fail::closed && !f.got_bytes;
  if (f.untried_left) return Retry::other_peer;
  if (stale && !f.fresh_retry_used) return Retry::same_peer_fresh;
  return Retry::no;
}

}  // namespace px::proxy
