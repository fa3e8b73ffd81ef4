#include "daemon/config.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/log.h"
#include "core/strings.h"
#include "net/geoip.h"
#include "observe/access_log.h"

namespace px {

std::string ListenAddr::str() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string listen_key(const ListenAddr& la) {
  return la.str() + (la.tls ? " tls" : "") + (la.proxy ? " proxy_protocol" : "") + (la.h2c ? " h2c" : "") +
         (la.http1_only ? " http1-only" : "");
}

static bool parse_listen(std::string_view v, ListenAddr* out, std::string* err) {
  std::string_view host, port;
  if (!v.empty() && v.front() == '[') {
    size_t close = v.find(']');
    if (close == std::string_view::npos || close + 1 >= v.size() || v[close + 1] != ':') {
      *err = "listen: expected [IPv6]:PORT, got '" + std::string(v) + "'";
      return false;
    }
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
  } else {
    size_t colon = v.rfind(':');
    if (colon == std::string_view::npos) {
      *err = "listen: expected ADDRESS:PORT, got '" + std::string(v) + "'";
      return false;
    }
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
  }
  net::IpAddr ip;
  if (!net::IpAddr::parse(host, &ip)) {
    *err = "listen: '" + std::string(host) + "' is not a numeric IPv4 or IPv6 address";
    return false;
  }
  uint64_t p;
  if (!parse_u64(port, &p) || p > 65535) {
    *err = "listen: port '" + std::string(port) + "' must be 0..65535";
    return false;
  }
  out->host = std::string(host);
  out->port = static_cast<uint16_t>(p);
  return true;
}

bool parse_listen_addr(std::string_view v, ListenAddr* out, std::string* error) { return parse_listen(v, out, error); }

bool parse_config(std::string_view text, const std::string& source, Config* out, std::string* error) {
  Config c;
  c.source = source;
  bool listen_seen = false;
  int lineno = 0;
  auto fail = [&](const std::string& msg) {
    *error = source + ":" + std::to_string(lineno) + ": " + msg;
    return false;
  };
  while (!text.empty()) {
    lineno++;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    size_t hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (!line.empty() && line.back() == '\r') line = trim(line.substr(0, line.size() - 1));
    if (line.empty()) continue;
    // Split into words.
    std::vector<std::string_view> w;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
      size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') i++;
      if (i > start) w.push_back(line.substr(start, i - start));
    }
    std::string key(w[0]);
    auto need_one = [&]() -> bool {
      if (w.size() != 2) {
        fail(key + ": expected exactly one value, got " + std::to_string(w.size() - 1));
        return false;
      }
      return true;
    };
    struct Dur {
      const char* name;
      uint64_t* p;
    } durs[] = {
        {"grace_period", &c.grace_period_ms},
        {"client_header_timeout", &c.client_header_timeout_ms},
        {"client_body_timeout", &c.client_body_timeout_ms},
        {"keepalive_timeout", &c.keepalive_timeout_ms},
        {"send_timeout", &c.send_timeout_ms},
        {"upstream_connect_timeout", &c.upstream_connect_timeout_ms},
        {"upstream_read_timeout", &c.upstream_read_timeout_ms},
        {"upstream_keepalive_timeout", &c.upstream_keepalive_timeout_ms},
        {"fail_timeout", &c.fail_timeout_ms},
        {"store_poll_interval", &c.store_poll_ms},
        {"lua_phase_budget", &c.lua_phase_budget_ms},
        {"tls_handshake_timeout", &c.tls_handshake_timeout_ms},
    };
    struct Sz {
      const char* name;
      uint64_t* p;
      bool size;
    } sizes[] = {
        {"max_header_size", &c.max_header_size, true},
        {"max_uri_length", &c.max_uri_length, true},
        {"max_body_size", &c.max_body_size, true},
        {"max_headers", &c.max_headers, false},
        {"max_connections", &c.max_connections, false},
        {"upstream_keepalive", &c.upstream_keepalive, false},
        {"max_fails", &c.max_fails, false},
        {"lua_memory_limit", &c.lua_memory_limit, true},
        {"shared_slots", &c.shared_slots, false},
        {"cache_max_size", &c.cache_max_size, true},
        {"cache_max_object", &c.cache_max_object, true},
        {"cache_memory", &c.cache_memory, true},
        {"cache_index_slots", &c.cache_index_slots, false},
        {"h2_max_concurrent_streams", &c.h2_max_concurrent_streams, false},
        {"h2_max_requests", &c.h2_max_requests, false},
        {"h2_max_continuations", &c.h2_max_continuations, false},
        {"h2_max_glitches", &c.h2_max_glitches, false},
        {"h2_max_queued_control", &c.h2_max_queued_control, false},
    };
    bool handled = false;
    for (auto& d : durs)
      if (key == d.name) {
        if (!need_one()) return false;
        if (!parse_duration_ms(w[1], d.p))
          return fail(key + ": '" + std::string(w[1]) + "' is not a duration (e.g. 500ms, 30s, 5m, 1h)");
        handled = true;
      }
    for (auto& s : sizes)
      if (key == s.name) {
        if (!need_one()) return false;
        bool ok = s.size ? parse_size(w[1], s.p) : parse_u64(w[1], s.p);
        if (!ok)
          return fail(key + ": '" + std::string(w[1]) + "' is not " +
                      (s.size ? "a size (e.g. 8k, 1m, 2g)" : "a whole number"));
        handled = true;
      }
    if (handled) continue;
    if (key == "listen") {
      if (w.size() < 2) return fail("listen: expected ADDRESS:PORT");
      if (!listen_seen) c.listen.clear();
      listen_seen = true;
      // `listen ADDRESS:PORT... [tls] [proxy_protocol] [h2c] [http1-only]`: the flags apply to the line's
      // addresses.
      bool tls = false, proxy = false, h2c = false, h1only = false;
      size_t end = w.size();
      while (end > 1 && (w[end - 1] == "tls" || w[end - 1] == "proxy_protocol" || w[end - 1] == "h2c" ||
                         w[end - 1] == "http1-only")) {
        std::string_view f = w[end - 1];
        (f == "tls" ? tls : f == "proxy_protocol" ? proxy : f == "h2c" ? h2c : h1only) = true;
        end--;
      }
      if (end < 2) return fail("listen: expected ADDRESS:PORT before 'tls', 'proxy_protocol', 'h2c' or 'http1-only'");
      if (h2c && tls) return fail("listen: 'h2c' is for cleartext listeners (TLS listeners offer h2 by ALPN)");
      if (h1only && !tls)
        return fail("listen: 'http1-only' is for TLS listeners (cleartext ones take HTTP/2 only with 'h2c')");
      for (size_t k = 1; k < end; k++) {
        ListenAddr la;
        std::string err;
        if (!parse_listen(w[k], &la, &err)) return fail(err);
        la.tls = tls;
        la.proxy = proxy;
        la.h2c = h2c;
        la.http1_only = h1only;
        c.listen.push_back(la);
      }
    } else if (key == "workers") {
      if (!need_one()) return false;
      uint64_t n;
      if (w[1] == "auto")
        c.workers = 0;
      else if (parse_u64(w[1], &n) && n >= 1 && n <= 1024)
        c.workers = static_cast<int>(n);
      else
        return fail("workers: expected 'auto' or a number from 1 to 1024, got '" + std::string(w[1]) + "'");
    } else if (key == "data_dir") {
      if (!need_one()) return false;
      c.data_dir = std::string(w[1]);
    } else if (key == "cache_dir") {
      if (!need_one()) return false;
      if (w[1] != "off" && w[1][0] != '/') return fail("cache_dir: expected an absolute path or 'off'");
      c.cache_dir = std::string(w[1]);
    } else if (key == "filters_dir") {
      if (!need_one()) return false;
      c.filters_dir = std::string(w[1]);
    } else if (key == "global_filters") {
      c.global_filters.clear();
      for (size_t k = 1; k < w.size(); k++) {
        if (w[k] == "none") continue;
        c.global_filters.emplace_back(w[k]);
      }
    } else if (key == "access_log") {
      // access_log PATH [json|combined] | off
      if (w.size() < 2 || w.size() > 3) return fail("access_log: expected PATH [json|combined], or off");
      if (w[1] == "off") {
        if (w.size() != 2) return fail("access_log: off takes nothing more");
        c.access_log.clear();
      } else {
        if (w[1].empty() || w[1][0] != '/') return fail("access_log: expected an absolute path, or off");
        c.access_log = std::string(w[1]);
        c.access_log_combined = false;
        if (w.size() == 3) {
          if (w[2] == "combined")
            c.access_log_combined = true;
          else if (w[2] != "json")
            return fail("access_log: the format is json or combined, not '" + std::string(w[2]) + "'");
        }
      }
    } else if (key == "access_log_fields") {
      // access_log_fields NAME... | all
      if (w.size() < 2) return fail("access_log_fields: expected field names, or all");
      c.access_log_fields = 0;
      for (size_t k = 1; k < w.size(); k++) {
        if (w[k] == "all" && w.size() == 2) break;
        uint32_t bit = proxy::access_log_field(w[k]);
        if (!bit) {
          std::string known;
          for (const char* f : proxy::kAccessLogFields) known += std::string(known.empty() ? "" : " ") + f;
          return fail("access_log_fields: no field '" + std::string(w[k]) + "' (fields: " + known + ")");
        }
        c.access_log_fields |= bit;
      }
    } else if (key == "metrics_listen") {
      if (!need_one()) return false;
      ListenAddr la;
      std::string err;
      if (w[1] != "off" && !parse_listen(w[1], &la, &err)) return fail("metrics_listen: " + err);
      c.metrics_listen = w[1] == "off" ? "" : std::string(w[1]);
    } else if (key == "geoip_database" || key == "geoip_asn_database") {
      if (!need_one()) return false;
      net::GeoDb db;
      std::string err;
      if (!db.refresh(std::string(w[1]), &err)) return fail(std::string(key) + ": " + err);
      (key == "geoip_database" ? c.geoip_database : c.geoip_asn_database) = std::string(w[1]);
    } else if (key == "status_file") {
      if (!need_one()) return false;
      c.status_file = std::string(w[1]);
    } else if (key == "default_route") {
      if (!need_one()) return false;
      c.default_route = std::string(w[1]);
    } else if (key == "not_found_route") {
      if (!need_one()) return false;
      c.not_found_route = std::string(w[1]);
    } else if (key == "io_engine") {
      if (!need_one()) return false;
      if (w[1] != "auto" && w[1] != "uring" && w[1] != "epoll")
        return fail("io_engine: expected auto, uring or epoll, got '" + std::string(w[1]) + "'");
      c.io_engine = std::string(w[1]);
    } else if (key == "log_level") {
      if (!need_one()) return false;
      log::Level l;
      if (!log::parse_level(std::string(w[1]).c_str(), &l))
        return fail("log_level: expected error, warn, info or debug, got '" + std::string(w[1]) + "'");
      c.log_level = std::string(w[1]);
    } else if (key == "underscores_in_headers") {
      if (!need_one()) return false;
      if (w[1] == "on")
        c.underscores_in_headers = true;
      else if (w[1] == "off")
        c.underscores_in_headers = false;
      else
        return fail("underscores_in_headers: expected 'on' or 'off', got '" + std::string(w[1]) + "'");
    } else if (key == "tls_protocols") {
      if (w.size() < 2) return fail("tls_protocols: expected TLSv1.2 and/or TLSv1.3");
      uint16_t lo = 0xffff, hi = 0;
      for (size_t k = 1; k < w.size(); k++) {
        uint16_t v = w[k] == "TLSv1.2" ? 0x0303 : w[k] == "TLSv1.3" ? 0x0304 : 0;
        if (!v)
          return fail("tls_protocols: '" + std::string(w[k]) +
                      "' is not TLSv1.2 or TLSv1.3 (older ones are not offered)");
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
      }
      c.tls_min_version = lo;
      c.tls_max_version = hi;
    } else if (key == "tls_ciphers") {
      if (!need_one()) return false;
      c.tls_ciphers = std::string(w[1]);
    } else if (key == "tls_curves") {
      if (!need_one()) return false;
      c.tls_curves = std::string(w[1]);
    } else if (key == "tls_default_certificate") {
      if (!need_one()) return false;
      c.tls_default_certificate = std::string(w[1]);
    } else if (key == "tls_unknown_name") {
      if (!need_one()) return false;
      if (w[1] == "default")
        c.tls_reject_unknown_name = false;
      else if (w[1] == "reject")
        c.tls_reject_unknown_name = true;
      else
        return fail("tls_unknown_name: expected 'default' or 'reject', got '" + std::string(w[1]) + "'");
    } else if (key == "trusted_proxies") {
      if (w.size() < 2) return fail("trusted_proxies: expected one or more CIDR ranges");
      for (size_t k = 1; k < w.size(); k++) {
        net::Cidr cidr;
        std::string err;
        if (!net::Cidr::parse(w[k], &cidr, &err)) return fail("trusted_proxies: " + err);
        c.trusted_proxies.add(cidr);
      }
    } else {
      return fail("unknown directive '" + key + "'");
    }
  }
  if (c.listen.empty()) {
    lineno = 0;
    *error = source + ": no listen address (add e.g. 'listen 0.0.0.0:80')";
    return false;
  }
  if (c.max_header_size < 256) return fail("max_header_size: must be at least 256 bytes");
  if (c.max_uri_length > c.max_header_size) c.max_uri_length = c.max_header_size;
  *out = std::move(c);
  return true;
}

bool load_config_file(const std::string& path, Config* out, std::string* error) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config(ss.str(), path, out, error);
}

}  // namespace px
