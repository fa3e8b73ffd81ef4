// RFC 9111 for a shared cache (policy.h): pure functions of heads and times.
#include "cache/policy.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <vector>

#include "core/strings.h"
#include "http/parser.h"
#include "route/route.h"

namespace px::cache {

namespace {

// A delta-seconds argument (RFC 9111 1.2.2): digits, saturating; -1 when it is not one.
int64_t delta(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);  // tolerated
  if (v.empty()) return -1;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return -1;
    n = n > (INT32_MAX - 9) / 10 ? INT32_MAX : n * 10 + (c - '0');  // 2^31 is "infinity" (1.2.2)
  }
  return n;
}

// Calls f(name, argument) for each directive of a Cache-Control value (names lower-cased by the caller).
template <class F>
void each_directive(std::string_view v, F&& f) {
  while (!v.empty()) {
    size_t end = 0;
    bool quoted = false;
    for (; end < v.size(); end++) {  // a comma inside a quoted argument does not end the directive
      if (v[end] == '"') quoted = !quoted;
      if (v[end] == ',' && !quoted) break;
    }
    std::string_view d = trim(v.substr(0, end));
    v = end < v.size() ? v.substr(end + 1) : std::string_view();
    if (d.empty()) continue;
    size_t eq = d.find('=');
    std::string_view name = trim(d.substr(0, eq));
    std::string_view arg = eq == std::string_view::npos ? std::string_view() : trim(d.substr(eq + 1));
    f(name, arg, eq != std::string_view::npos);
  }
}

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {  // Howard Hinnant's algorithm
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

int month_of(std::string_view m) {
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; i++)
    if (m == kMonths[i]) return i + 1;
  return 0;
}

bool digits(std::string_view s, int* out) {
  if (s.empty() || s.size() > 4) return false;
  int n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  *out = n;
  return true;
}

// "HH:MM:SS" → seconds of the day.
bool clock_of(std::string_view s, int64_t* out) {
  int h, m, sec;
  if (s.size() != 8 || s[2] != ':' || s[5] != ':' || !digits(s.substr(0, 2), &h) || !digits(s.substr(3, 2), &m) ||
      !digits(s.substr(6, 2), &sec) || h > 23 || m > 59 || sec > 60)
    return false;
  *out = h * 3600 + m * 60 + sec;
  return true;
}

std::vector<std::string_view> words(std::string_view v) {
  std::vector<std::string_view> w;
  size_t i = 0;
  while (i < v.size()) {
    while (i < v.size() && v[i] == ' ') i++;
    size_t j = i;
    while (j < v.size() && v[j] != ' ') j++;
    if (j > i) w.push_back(v.substr(i, j - i));
    i = j;
  }
  return w;
}

// An entity tag's opaque part and whether it is weak; false when it is not an entity tag.
bool entity_tag(std::string_view t, std::string_view* opaque) {
  t = trim(t);
  if (t.size() >= 2 && t[0] == 'W' && t[1] == '/') t.remove_prefix(2);
  if (t.size() < 2 || t.front() != '"' || t.back() != '"') return false;
  *opaque = t;
  return true;
}

}  // namespace

CacheControl parse_cache_control(const http::Head& h, bool request) {
  CacheControl cc;
  bool pragma_no_cache = false;
  for (size_t i = 0; i < h.headers.size(); i++) {
    std::string_view n = h.name(i);
    if (request && iequals(n, "pragma")) {
      each_directive(h.value(i), [&](std::string_view d, std::string_view, bool) {
        if (iequals(d, "no-cache")) pragma_no_cache = true;
      });
      continue;
    }
    if (!iequals(n, "cache-control")) continue;
    cc.any = true;
    each_directive(h.value(i), [&](std::string_view d, std::string_view arg, bool has_arg) {
      std::string lower(d);
      for (char& c : lower) c = ascii_lower(c);
      if (lower == "no-store")
        cc.no_store = true;
      else if (lower == "no-cache")
        cc.no_cache = true;
      else if (lower == "private")
        cc.private_ = true;
      else if (lower == "public")
        cc.public_ = true;
      else if (lower == "must-revalidate" || lower == "proxy-revalidate")
        cc.must_revalidate = true;
      else if (lower == "only-if-cached")
        cc.only_if_cached = true;
      else if (lower == "max-age") {
        int64_t v = delta(arg);
        // 5.2.2.1: an invalid max-age in a response makes it stale; several: the smallest counts.
        if (v < 0) v = request ? -1 : 0;
        if (v >= 0) cc.max_age = cc.max_age < 0 ? v : std::min(cc.max_age, v);
      } else if (lower == "s-maxage") {
        int64_t v = delta(arg);
        if (v < 0) v = 0;
        cc.s_maxage = cc.s_maxage < 0 ? v : std::min(cc.s_maxage, v);
      } else if (lower == "max-stale") {
        cc.max_stale = has_arg ? delta(arg) : CacheControl::kAnyStale;
      } else if (lower == "min-fresh") {
        cc.min_fresh = delta(arg);
      } else if (lower == "stale-while-revalidate") {
        cc.stale_while_revalidate = delta(arg);
      } else if (lower == "stale-if-error") {
        cc.stale_if_error = delta(arg);
      }
    });
  }
  if (request && !cc.any && pragma_no_cache) cc.no_cache = true;
  return cc;
}

int64_t parse_http_date(std::string_view v) {
  v = trim(v);
  std::vector<std::string_view> w = words(v);
  int day = 0, year = 0, mon = 0;
  int64_t secs = 0;
  if (w.size() == 6 && w[0].size() == 4 && w[0][3] == ',' && w[5] == "GMT") {
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    if (w[1].size() != 2 || !digits(w[1], &day) || !(mon = month_of(w[2])) || w[3].size() != 4 ||
        !digits(w[3], &year) || !clock_of(w[4], &secs))
      return -1;
  } else if (w.size() == 4 && w[0].size() > 4 && w[0].back() == ',' && w[3] == "GMT") {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years: RFC 9110 5.6.7's 50-year rule, simply)
    std::string_view d = w[1];
    if (d.size() != 9 || d[2] != '-' || d[6] != '-' || !digits(d.substr(0, 2), &day) ||
        !(mon = month_of(d.substr(3, 3))) || !digits(d.substr(7, 2), &year) || !clock_of(w[2], &secs))
      return -1;
    year += year < 70 ? 2000 : 1900;
  } else if (w.size() == 5 && w[0].size() == 3) {
    // asctime: Sun Nov  6 08:49:37 1994
    if (!(mon = month_of(w[1])) || !digits(w[2], &day) || !clock_of(w[3], &secs) || w[4].size() != 4 ||
        !digits(w[4], &year))
      return -1;
  } else {
    return -1;
  }
  if (day < 1 || day > 31 || year < 1900) return -1;
  return days_from_civil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day)) * 86400 + secs;
}

void format_http_date(int64_t t, char out[29]) {
  time_t tt = static_cast<time_t>(t);
  tm g;
  gmtime_r(&tt, &g);
  char buf[32];
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &g);
  memcpy(out, buf, 29);
}

bool heuristically_cacheable(int status) {
  switch (status) {
    case 200:
    case 203:
    case 204:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501: return true;
    default: return false;
  }
}

bool authorization_allows(const CacheControl& rs) { return rs.public_ || rs.s_maxage >= 0 || rs.must_revalidate; }

StoreDecision decide_store(const http::Head& req, const CacheControl& rq, const http::Head& resp,
                           const CacheControl& rs, const route::CacheSpec& spec, int64_t now) {
  StoreDecision d;
  int st = resp.status;
  if (req.method != http::Method::get) return d.no = "method", d;
  if (rq.no_store) return d.no = "request no-store", d;
  if (rs.no_store) return d.no = "no-store", d;
  if (rs.private_) return d.no = "private", d;
  if (st == 206 || st == 304 || st < 200) return d.no = "status", d;
  if (req.find(http::Hdr::authorization) >= 0 && !authorization_allows(rs)) return d.no = "authorization", d;
  if (resp.find(std::string_view("set-cookie")) >= 0) {
    if (!spec.store_set_cookie) return d.no = "set-cookie", d;
    d.strip_cookie = true;
  }
  if (vary_names(resp) == "*") return d.no = "vary *", d;
  // Explicit freshness (4.2.1): s-maxage, max-age, then Expires less Date.
  int64_t date = parse_http_date(resp.get(std::string_view("date")));
  if (date < 0) date = now;
  bool explicit_ = true;
  if (rs.s_maxage >= 0) {
    d.lifetime = rs.s_maxage;
  } else if (rs.max_age >= 0) {
    d.lifetime = rs.max_age;
  } else if (int e = resp.find(std::string_view("expires")); e >= 0) {
    int64_t exp = parse_http_date(resp.value(static_cast<size_t>(e)));
    d.lifetime = exp < 0 ? 0 : std::max<int64_t>(0, exp - date);  // an invalid Expires is in the past (5.3)
  } else {
    explicit_ = false;
  }
  if (!explicit_) {
    // Heuristic freshness (4.2.2), only for statuses that allow it or a public response: the route's
    // default_ttl, else a tenth of the time since Last-Modified (at most a day).
    if (!heuristically_cacheable(st) && !rs.public_) return d.no = "no freshness", d;
    d.heuristic = true;
    if (spec.default_ttl > 0) {
      d.lifetime = spec.default_ttl;
    } else {
      int64_t lm = parse_http_date(resp.get(std::string_view("last-modified")));
      d.lifetime = lm >= 0 && lm < date ? std::min<int64_t>((date - lm) / 10, 86400) : 0;
    }
  }
  // A response that is stale at once is worth keeping only when it can be revalidated.
  bool validators = resp.find(std::string_view("etag")) >= 0 || resp.find(std::string_view("last-modified")) >= 0;
  if ((d.lifetime <= 0 || rs.no_cache) && !validators) return d.no = "no validator to revalidate with", d;
  return d;
}

int64_t initial_age(const http::Head& resp, int64_t request_time, int64_t response_time) {
  int64_t date = parse_http_date(resp.get(std::string_view("date")));
  int64_t apparent = date < 0 ? 0 : std::max<int64_t>(0, response_time - date);
  int64_t age_value = delta(resp.get(std::string_view("age")));
  if (age_value < 0) age_value = 0;
  int64_t corrected = age_value + std::max<int64_t>(0, response_time - request_time);
  return std::max(apparent, corrected);
}

Use usable(const Stored& s, const CacheControl& rq) {
  if (s.no_cache || rq.no_cache) return Use::revalidate;
  int64_t left = s.lifetime - s.age;  // freshness left (negative: stale by that much)
  // max-age=0 (a browser's reload) asks for a validation, as Squid and Varnish read it; else the age counts.
  if (rq.max_age == 0 || (rq.max_age > 0 && s.age > rq.max_age)) return Use::revalidate;
  if (rq.min_fresh >= 0 && left < rq.min_fresh) return Use::revalidate;
  if (left > 0) return Use::fresh;
  if (s.must_revalidate) return Use::revalidate;
  if (rq.max_stale >= 0 && -left <= rq.max_stale) return Use::stale_ok;
  return Use::revalidate;
}

bool not_modified(const http::Head& req, std::string_view etag, std::string_view last_modified) {
  int inm = req.find(std::string_view("if-none-match"));
  if (inm >= 0) {
    std::string_view mine;
    if (!entity_tag(etag, &mine)) return false;
    for (size_t i = static_cast<size_t>(inm); i < req.headers.size(); i++) {
      if (!iequals(req.name(i), "if-none-match")) continue;
      std::string_view v = req.value(i);
      if (trim(v) == "*") return true;
      while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view t;
        if (entity_tag(v.substr(0, comma), &t) && t == mine) return true;  // weak comparison (RFC 9110 8.8.3.2)
        v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
      }
    }
    return false;
  }
  std::string_view ims = req.get(std::string_view("if-modified-since"));
  if (ims.empty() || last_modified.empty()) return false;
  int64_t since = parse_http_date(ims), lm = parse_http_date(last_modified);
  return since >= 0 && lm >= 0 && lm <= since;
}

std::string vary_names(const http::Head& resp) {
  std::vector<std::string> names;
  for (size_t i = 0; i < resp.headers.size(); i++) {
    if (!iequals(resp.name(i), "vary")) continue;
    std::string_view v = resp.value(i);
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view n = trim(v.substr(0, comma));
      v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
      if (n.empty()) continue;
      if (n == "*") return "*";
      std::string lower(n);
      for (char& c : lower) c = ascii_lower(c);
      if (std::find(names.begin(), names.end(), lower) == names.end()) names.push_back(lower);
    }
  }
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out.push_back(',');
    out += n;
  }
  return out;
}

void vary_values(const http::Head& req, std::string_view names, std::string* out) {
  while (!names.empty()) {
    size_t comma = names.find(',');
    std::string_view n = names.substr(0, comma);
    names = comma == std::string_view::npos ? std::string_view() : names.substr(comma + 1);
    out->push_back('\n');
    out->append(n);
    out->push_back(':');
    bool first = true;
    for (size_t i = 0; i < req.headers.size(); i++) {
      if (!iequals(req.name(i), n)) continue;
      std::string_view v = req.value(i);
      while (!v.empty()) {  // each list member, trimmed, joined by ","
        size_t c = v.find(',');
        std::string_view m = trim(v.substr(0, c));
        v = c == std::string_view::npos ? std::string_view() : v.substr(c + 1);
        if (m.empty()) continue;
        if (!first) out->push_back(',');
        out->append(m);
        first = false;
      }
    }
  }
}

}  // namespace px::cache
