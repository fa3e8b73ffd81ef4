// px::cache policy — RFC 9111's rules for a shared cache, as pure functions of heads and times: what may be
// stored (3), for how long it is fresh (4.2), whether a stored response may answer a request (4), the
// validators (4.3, RFC 9110 13), Vary's secondary key (4.1). No I/O: the store (store.h) keeps objects, the
// stream's cache stage (stream/cache.cpp) applies these decisions. Times are whole seconds since the epoch, as
// the fields that carry them.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace px::http {
struct Head;
}
namespace px::route {
struct CacheSpec;
}

namespace px::cache {

// One side's Cache-Control directives (RFC 9111 5.2). -1: absent.
struct CacheControl {
  bool no_store = false;
  bool no_cache = false;  // unqualified or with field names: both mean "validate first" here
  bool private_ = false;
  bool public_ = false;
  bool must_revalidate = false;  // proxy-revalidate too (a shared cache)
  bool only_if_cached = false;
  bool any = false;  // some Cache-Control field was present
  int64_t max_age = -1;
  int64_t s_maxage = -1;
  int64_t max_stale = -1;  // request: seconds; kAnyStale without a value
  int64_t min_fresh = -1;
  int64_t stale_while_revalidate = -1;
  int64_t stale_if_error = -1;
  static constexpr int64_t kAnyStale = INT64_MAX;
};
// Every Cache-Control field of the head; a request's `Pragma: no-cache` counts as no-cache when it has no
// Cache-Control (RFC 9111 5.4). Unknown directives are ignored, a malformed argument makes a delta -1 (absent)
// except max-age, which RFC 9111 5.2.2.1 treats as stale (0).
CacheControl parse_cache_control(const http::Head& h, bool request);

// HTTP-date (RFC 9110 5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime forms. -1: not a date.
int64_t parse_http_date(std::string_view v);
// IMF-fixdate into out (29 characters).
void format_http_date(int64_t t, char out[29]);

// Why a response is not stored (Cache-Status detail, the access log, pxctl trace), or "" when it is.
// decide_store() is asked at the response head; the body may still make it unstorable ("too large",
// "incomplete").
struct StoreDecision {
  const char* no = "";        // the reason it is not stored, or ""
  int64_t lifetime = 0;       // freshness lifetime, seconds (4.2.1)
  bool heuristic = false;     // the lifetime is heuristic (4.2.2) or the route's default_ttl
  bool strip_cookie = false;  // the route stores Set-Cookie responses: the stored copy has none
};
StoreDecision decide_store(const http::Head& req, const CacheControl& rq, const http::Head& resp,
                           const CacheControl& rs, const route::CacheSpec& spec, int64_t now);

// RFC 9111 4.2.3: the age the response had when it arrived, corrected for the time on the way.
int64_t initial_age(const http::Head& resp, int64_t request_time, int64_t response_time);

// What a stored response is to a request (RFC 9111 4, 4.2.4, 5.2.1).
enum class Use : uint8_t {
  fresh,       // serve it
  stale_ok,    // stale, and the request's max-stale accepts it (or the route's stale_while_revalidate)
  revalidate,  // stale, or no-cache: ask the upstream with its validators first
};
struct Stored {  // what the decision needs of a stored response
  int64_t lifetime = 0;
  int64_t age = 0;  // current age (initial age + resident time)
  bool no_cache = false;
  bool must_revalidate = false;  // must-revalidate, proxy-revalidate or s-maxage: never stale unvalidated
  int64_t swr = 0;               // stale-while-revalidate window, seconds (the response's, else the route's)
};
Use usable(const Stored& s, const CacheControl& rq);

// May a request with Authorization be answered from (or fill) the cache? Only with public, s-maxage or
// must-revalidate in the response (RFC 9111 3.5).
bool authorization_allows(const CacheControl& rs);

// A client's conditional GET/HEAD against a stored response's validators (RFC 9110 13.2.2): true when the
// answer is 304. If-None-Match (weak comparison) decides when present; else If-Modified-Since against
// Last-Modified.
bool not_modified(const http::Head& req, std::string_view etag, std::string_view last_modified);

// Vary (RFC 9111 4.1): the response's field names, lower case, sorted, joined by ','; "*" when it varies on
// everything (never stored); "" when it has none.
std::string vary_names(const http::Head& resp);
// The request's values for those names, normalised (a field's lines joined by ", ", spaces around commas
// dropped), appended to `out` as "\nname:value".
void vary_values(const http::Head& req, std::string_view names, std::string* out);

// Statuses a cache may store with heuristic freshness (RFC 9110 15.1).
bool heuristically_cacheable(int status);

}  // namespace px::cache
