// px::proxy trace — pxctl trace: one request, marked by a token pxadmind
// issued, whose path through pxd is recorded and written where pxadmind reads it.
//
//   pxctl ─ POST /v1/traces ─▶ pxadmind: an id and a token (HMAC-SHA256 with the key pxd wrote)
//   pxctl ─ request with X-Px-Trace: token ─▶ pxd: route and why, each filter's verdict and time,
//           the peers and why one was chosen, every attempt, then the end record
//   pxd ─ <status_file>.traces/<id>.json ─▶ pxadmind GET /v1/traces/<id> ─▶ pxctl prints it
//
// The key never leaves the host: pxd makes it at start (<status_file>.trace-key,
// mode 0600, readable by pxadmind as the same user). A token names its id and
// expiry (at most 5 minutes ahead) and is checked in constant time; without a
// valid one the request is served as any other. X-Px-Trace is never forwarded.
// Untraced requests pay one branch on a flag the HTTP/1 codec sets.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lua/engine.h"
#include "observe/end_record.h"

namespace px::proxy {

struct Stream;
struct PeerState;

using TraceKey = std::array<uint8_t, 32>;

struct Trace {
  std::string id;
  std::string route_why;
  std::vector<lua::FilterTrace> filters;
  std::string balancer;  // the pool's method, and each peer's state when the first one was picked
  std::vector<std::string> peers;
  struct Attempt {
    std::string peer, why, outcome;
  };
  std::vector<Attempt> attempts;
};

// The token in an X-Px-Trace value ("ID.EXPIRY.MAC", several comma-separated: one per pxd key)
// that this key signed and that has not expired: its id, or "".
std::string trace_check(std::string_view value, const TraceKey& key, int64_t now_s);
// A token for `id`, valid until `expires` (pxadmind's side; the tests' too).
std::string trace_token(const TraceKey& key, std::string_view id, int64_t expires);
// Reads a key file (64 hex digits). Makes a new key and writes it when make is set.
bool trace_key_file(const std::string& path, bool make, TraceKey* key, std::string* error);

// Called from the stream as things happen (only for traced streams).
void trace_begin(Stream* st);  // checks the token: st->trace is set when it holds
void trace_route(Stream* st);  // after routing
// fresh: a retry on a new connection to the same peer; reused: over a kept-alive connection.
void trace_pick(Stream* st, PeerState* p, bool fresh, bool by_filter, bool reused);
void trace_attempt_failed(Stream* st, const char* outcome);
// What the upstream side adds to the attempt's why (HTTP/2: the stream ID and why its connection was picked).
void trace_upstream_note(Stream* st, const std::string& note);
// The stream ended: the record goes to <dir>/<id>.json.
void trace_write(const std::string& dir, const Trace& t, const EndRecord& r);

}  // namespace px::proxy
