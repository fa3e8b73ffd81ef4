// px::lua::RequestView — all a filter can see of one request, and what the
// filters leave for px. The proxy fills it before each phase (proxy::run_phase);
// the engine and the px API read only this, never proxy internals.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net/cidr.h"
#include "net/geoip.h"

namespace px::http {
struct Head;
}
namespace px::route {
struct Route;
class Snapshot;
struct AuthCache;
}  // namespace px::route

namespace px::lua {

struct HeaderEdit {
  uint8_t mode;  // 0 set, 1 add, 2 remove
  std::string name, value;
};

// An outbound HTTP request a filter waits for (px.fetch), and its answer.
struct FetchCall {
  std::string method, url, body;
  std::string fields;  // the filter's header fields, as HTTP/1 lines ("Name: value\r\n" each)
  uint64_t timeout_ms = 0;
};
struct FetchResult {
  int status = 0;  // 0: no answer; `error` says why
  bool timeout = false;
  std::string error;
  const http::Head* head = nullptr;                          // the answer's fields: this parsed head, or
  std::vector<std::pair<std::string, std::string>> headers;  // these (names as given)
  std::string body;
};

// What filters did to one stream. Allocated only for routes with filters.
struct FilterState {
  int req_ref = -2;  // the request's Lua object, in the registry (made once, reused with the state)
  std::vector<HeaderEdit> req_edits, resp_edits;
  int new_status = 0;
  int respond_status = 0;
  std::string respond_body;
  std::vector<std::pair<std::string, std::string>> respond_headers;
  int peer = -1;  // 0-based, chosen in upstream_peer
  // A filter waits (Verdict::wait): for wait_ms (px.sleep), or for `fetch` (px.fetch). The stream does the
  // waiting and resumes the filter (Engine::resume).
  enum WaitKind : uint8_t { kNoWait = 0, kSleep, kFetch, kDns };  // kDns: px.reverse_dns (the address in fetch.url)
  WaitKind wait = kNoWait;
  bool suspended = false;  // a filter's coroutine is parked in Lua (Engine::done lets it go)
  bool renewed = false;    // the Lua request object was cleared for this request (the first Lua phase does it)
  int native_next = -1;    // a filter run in C++ waits: the chain goes on from this filter (Engine::resume)
  uint64_t wait_ms = 0;
  FetchCall fetch;
  // The cache stage (stream/cache.h): req:cache_key() and req:cache_bypass() in the request phase,
  // req:cache_no_store() in the response phase.
  std::string cache_key;
  bool cache_bypass = false;
  bool cache_no_store = false;
  void clear() {
    cache_key.clear();
    cache_bypass = cache_no_store = false;
    req_edits.clear();
    resp_edits.clear();
    new_status = respond_status = 0;
    respond_body.clear();
    respond_headers.clear();
    peer = -1;
    wait = kNoWait;
    suspended = false;
    renewed = false;
    native_next = -1;
  }
};

struct RequestView {
  // The request.
  const http::Head* req = nullptr;
  std::string_view uri;       // path and query as sent (from an absolute-form target: its path)
  std::string_view host;      // Host, or the authority of an absolute-form target
  net::IpAddr client_ip;      // the real client (behind trusted proxies)
  bool trusted_peer = false;  // the connection comes from trusted_proxies: X-Forwarded-Proto counts
  bool tls = false;           // the client connection is TLS
  std::string_view sni;
  // Routing.
  const route::Route* route = nullptr;     // nullptr before routing (early_request)
  const route::Snapshot* snap = nullptr;   // access lists and ACME challenges
  route::AuthCache* auth_cache = nullptr;  // per worker: verified Basic credentials
  uint64_t now_ms = 0;
  // The response (response and logging phases): the upstream's head, or nullptr when px answered.
  const http::Head* resp = nullptr;
  // X-Request-ID, made when first asked for (req:request_id()): request_id(owner).
  std::string_view (*request_id)(void* owner) = nullptr;
  void* owner = nullptr;
  // The worker's GeoIP databases and their cache (req:country(), req:asn()).
  net::Geo* geo = nullptr;
  int status = 0;
  bool trace = false;  // pxctl trace: record each filter's verdict and time (Engine::take_trace)
  // What the filters did (the engine allocates it, pooled).
  std::unique_ptr<FilterState> fs;
};

}  // namespace px::lua
