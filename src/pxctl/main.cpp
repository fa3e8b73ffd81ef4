// pxctl — the px command line. See pxctl(1).
//
// Exit codes: 0 done, 1 pxadmind failed (5xx) or unexpected answer, 2 usage,
// 3 not found, 4 refused (invalid, conflict, stale version), 5 cannot reach
// pxadmind, 6 not authorised.
#include <sys/un.h>
#include <unistd.h>

#include <sys/stat.h>
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>

#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/strings.h"
#include "http/client.h"
#include "lua/engine.h"

using json = nlohmann::json;

namespace {

struct Global {
  std::string socket = "/run/px/admin.sock";
  std::string url;
  std::string token;
  bool as_json = false;
  bool no_wait = false;
} g;

struct Reply {
  int status = 0;
  json body;
  std::string etag;
};

[[noreturn]] void die(int code, const std::string& msg) {
  std::fprintf(stderr, "pxctl: %s\n", msg.c_str());
  std::exit(code);
}

// Sizes and durations take pxd.conf's suffixes; a bare number keeps the unit the flag always had.
uint64_t size_flag(const char* flag, const std::string& v) {
  uint64_t n;
  if (!px::parse_size(v, &n)) die(2, std::string(flag) + " '" + v + "': expected " + px::kSizeForms);
  return n;
}
uint64_t duration_flag(const char* flag, const std::string& v, uint64_t bare_unit_ms) {
  uint64_t ms;
  if (!px::parse_duration(v, bare_unit_ms, &ms))
    die(2, std::string(flag) + " '" + v + "': expected " + (bare_unit_ms == 1 ? "milliseconds" : "seconds") + ", or " +
               px::kDurationForms);
  return ms;
}

void wait_applied();

// One call to pxadmind's API, through px's HTTP/1 client: its unix socket, or --url.
Reply call(const std::string& method, const std::string& path, const json* body = nullptr,
           const std::string& if_match = "") {
  px::http::ClientRequest rq;
  rq.method = method;
  std::string where;
  if (!g.url.empty()) {
    std::string u = g.url;
    if (u.rfind("http://", 0) != 0) die(2, "--url: expected http://HOST:PORT, got '" + u + "'");
    while (!u.empty() && u.back() == '/') u.pop_back();
    rq.url = u + path;
    where = g.url;
  } else {
    if (g.socket.size() >= sizeof(sockaddr_un::sun_path)) die(2, "--socket: path too long");
    rq.url = "http://pxadmind" + path;
    rq.connect_to = "unix:" + g.socket;
    where = g.socket;
  }
  rq.user_agent = "pxctl/" PX_VERSION;
  if (!g.token.empty()) rq.headers.emplace_back("Authorization", "Bearer " + g.token);
  if (!if_match.empty()) rq.headers.emplace_back("If-Match", "\"" + if_match + "\"");
  if (body) {
    rq.content_type = "application/json";
    rq.body = body->dump();
  }
  px::http::ClientResponse resp = px::http::Client::fetch_now(std::move(rq), [](px::http::Client& c) {
    c.timeout_ms = 600 * 1000;  // an import of a large configuration
    c.max_body = 256u << 20;
  });
  if (resp.status == 0) {
    int e = resp.sys_error;
    if (g.url.empty() && (e == UV_ENOENT || e == UV_ECONNREFUSED))
      die(5, "pxadmind is not running at " + g.socket + " (" + uv_strerror(e) +
                 "): start it with 'systemctl start pxadmind' or 'pxadmind --socket " + g.socket + "'");
    if (g.url.empty() && e == UV_EACCES)
      die(5, "cannot connect to " + g.socket + ": permission denied (run as a member of the socket's group, or root)");
    if (e == UV_ECONNREFUSED || e == UV_ENOENT || e == UV_EACCES || e == UV_ETIMEDOUT || e == UV_ENETUNREACH ||
        e == UV_EHOSTUNREACH || e == UV_EAI_NONAME || e == UV_EAI_AGAIN)
      die(5, "cannot reach pxadmind at " + where + ": " + resp.error);
    if (resp.failure == px::http::ClientFailure::bad_response || resp.failure == px::http::ClientFailure::too_large)
      die(1, "bad answer from pxadmind: " + resp.error);
    die(e ? 5 : 1, "lost the connection to pxadmind at " + where + ": " + resp.error);
  }
  Reply r;
  r.status = resp.status;
  std::string et = resp.header("etag");
  if (et.size() >= 2 && et.front() == '"') et = et.substr(1, et.size() - 2);
  r.etag = et;
  if (!resp.body.empty()) r.body = json::parse(resp.body, nullptr, false);
  if (method != "GET" && r.status < 300 && !g.no_wait) wait_applied();
  return r;
}

// After a change: until every running pxd of pxadmind's host serves the store as it is now, so that a request
// right after pxctl returns meets the change (in a fleet too: pxadmind answers once this host applied it).
// Bounded: a pxd that does not catch up in 10 s is named, and the change stays made.
void wait_applied() {
  Reply s = call("GET", "/v1/status");
  if (s.status != 200 || !s.body.is_object()) return;
  uint64_t want = s.body.value("generation", uint64_t(0));
  auto behind = [&](const Reply& st) {
    std::string who;
    for (const json& p : st.body.value("pxd", json::array()))
      if (p.value("running", false) && p.value("generation", uint64_t(0)) < want)
        who += (who.empty() ? "" : ", ") + p.value("status_file", std::string("pxd"));
    return who;
  };
  uint64_t until = uv_hrtime() + 10'000'000'000ull;
  for (std::string who = behind(s); !who.empty(); who = behind(s)) {
    if (uv_hrtime() > until) {
      std::fprintf(stderr, "pxctl: the change is stored, but pxd (%s) has not applied generation %llu after 10 s\n",
                   who.c_str(), static_cast<unsigned long long>(want));
      return;
    }
    usleep(5000);
    s = call("GET", "/v1/status");
    if (s.status != 200 || !s.body.is_object()) return;
  }
}

// Exits with the right code when the reply is an error.
Reply check(Reply r) {
  if (r.status < 400) return r;
  std::string msg;
  if (r.body.is_object() && r.body.contains("error")) {
    const json& e = r.body["error"];
    if (e.contains("field")) msg = e["field"].get<std::string>() + ": ";
    msg += e.value("message", "");
  } else {
    msg = "HTTP " + std::to_string(r.status);
  }
  if (g.as_json) std::cout << r.body.dump(2) << "\n";
  int code = r.status == 404 ? 3 : r.status == 401 || r.status == 403 ? 6 : r.status >= 500 ? 1 : 4;
  die(code, msg + " (" + std::to_string(r.status) + ")");
}

std::string join(const json& arr, const char* sep = ",") {
  std::string s;
  for (const auto& x : arr) {
    if (!s.empty()) s += sep;
    s += x.is_string()                        ? x.get<std::string>()
         : x.is_object() && x.contains("url") ? x["url"].get<std::string>()
                                              : x.dump();
  }
  return s;
}

void table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); i++) w[i] = head[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); i++) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); i++) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::cout << s << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
}

void print(const json& j) { std::cout << j.dump(2) << "\n"; }

std::string url_escape(const std::string& s) {
  std::string o;
  char buf[4];
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/')
      o.push_back(static_cast<char>(c));
    else {
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      o += buf;
    }
  }
  return o;
}

// ---- routes ----

struct RouteOpts {
  std::vector<std::string> hosts, upstreams, filters;
  std::string path, lb, health_path;
  bool strip = false, no_strip = false, disabled = false;
  std::string max_body, connect_ms, read_ms;  // sizes and durations, with their units
  std::string upstream_ca, upstream_sni, upstream_verify, upstream_cert, upstream_proto;
  std::string tls;
  std::string cache;  // on, off, or the JSON object of the route's "cache"
  bool passthrough = false;
};

void add_route_options(CLI::App* c, RouteOpts& o, bool for_set) {
  c->add_option("--host", o.hosts, "hostname this route serves (repeat; *.example.com for wildcards)");
  c->add_option("--upstream", o.upstreams,
                "upstream peer http(s)://, h2c:// or grpc://HOST:PORT[#WEIGHT] (repeat; one protocol per route)");
  c->add_option("--upstream-proto", o.upstream_proto,
                "http(s) upstreams: http/1.1 (default) or h2 (https: ALPN; http: HTTP/2 with prior knowledge)")
      ->check(CLI::IsMember({"http/1.1", "h2"}));
  c->add_option("--upstream-ca", o.upstream_ca, "https upstreams: verify against this PEM CA bundle (absolute path)");
  c->add_option("--upstream-sni", o.upstream_sni, "https upstreams: the name sent as SNI and verified");
  c->add_option("--upstream-client-cert", o.upstream_cert, "https upstreams: present this stored certificate (mTLS)");
  c->add_option("--upstream-verify", o.upstream_verify, "https upstreams: on (default) or off (logged as a warning)")
      ->check(CLI::IsMember({"on", "off"}));
  c->add_option(
      "--tls", o.tls,
      "HTTPS for the hosts: auto (a certificate from the ACME CA, renewed), off, or a stored certificate's name");
  if (!for_set)
    c->add_flag("--passthrough", o.passthrough,
                "SNI passthrough: TLS for --host goes as raw bytes to tcp:// upstreams that terminate it");
  c->add_option("--path", o.path, "path prefix (whole segments), default /");
  c->add_flag("--strip-path", o.strip, "remove the path prefix before proxying");
  if (for_set) c->add_flag("--no-strip-path", o.no_strip, "send the path as it came");
  c->add_option("--lb", o.lb, "round_robin, least_conn or ip_hash")
      ->check(CLI::IsMember({"round_robin", "least_conn", "ip_hash"}));
  c->add_option("--filter", o.filters, "filter NAME or NAME=JSON config (repeat, in order)");
  c->add_option("--max-body-size", o.max_body, "SIZE: bytes, or 1k, 10m, 2g; 0 = unlimited, -1 = pxd.conf default");
  c->add_option("--connect-timeout", o.connect_ms,
                "upstream connect timeout: ms, or 500ms, 5s, 1m (0 = pxd.conf default)");
  c->add_option("--read-timeout", o.read_ms, "upstream read timeout: ms, or 500ms, 30s, 5m (0 = pxd.conf default)");
  c->add_option("--health-path", o.health_path, "enable active health checks on this path");
  c->add_option("--cache", o.cache,
                "the response cache (RFC 9111): on, off, or a JSON object (default_ttl, stale_while_revalidate, "
                "stale_if_error, max_object_size, lock_timeout, store_set_cookie)");
  if (!for_set) c->add_flag("--disabled", o.disabled, "add it disabled");
}

json route_body(const RouteOpts& o, bool partial) {
  json b = json::object();
  if (!o.hosts.empty()) b["hosts"] = o.hosts;
  if (!o.upstreams.empty()) {
    json ups = json::array();
    for (const auto& u : o.upstreams) {
      size_t hash = u.find('#');
      if (hash == std::string::npos)
        ups.push_back(u);
      else {
        char* end;
        long w = std::strtol(u.c_str() + hash + 1, &end, 10);
        if (*end || w < 1) die(2, "--upstream " + u + ": the weight after '#' must be a positive number");
        ups.push_back({{"url", u.substr(0, hash)}, {"weight", w}});
      }
    }
    b["upstreams"] = ups;
  }
  if (!o.upstream_proto.empty()) b["upstream_proto"] = o.upstream_proto;
  if (!o.path.empty()) b["path"] = o.path;
  if (o.strip) b["strip_path"] = true;
  if (o.no_strip) b["strip_path"] = false;
  if (!o.lb.empty()) b["lb"] = o.lb;
  if (!o.filters.empty()) {
    json fl = json::array();
    for (const auto& f : o.filters) {
      size_t eq = f.find('=');
      json item = {{"name", f.substr(0, eq)}};
      if (eq != std::string::npos) {
        json cfg = json::parse(f.substr(eq + 1), nullptr, false);
        if (cfg.is_discarded() || !cfg.is_object())
          die(2, "--filter " + f.substr(0, eq) + ": the config after '=' must be a JSON object");
        item["config"] = cfg;
      }
      fl.push_back(item);
    }
    b["filters"] = fl;
  }
  if (o.max_body == "-1")
    b["max_body_size"] = -1;
  else if (!o.max_body.empty())
    b["max_body_size"] = size_flag("--max-body-size", o.max_body);
  if (!o.connect_ms.empty()) b["connect_timeout_ms"] = duration_flag("--connect-timeout", o.connect_ms, 1);
  if (!o.read_ms.empty()) b["read_timeout_ms"] = duration_flag("--read-timeout", o.read_ms, 1);
  if (!o.health_path.empty()) b["health_check"] = {{"path", o.health_path}};
  if (!o.upstream_ca.empty() || !o.upstream_sni.empty() || !o.upstream_verify.empty() || !o.upstream_cert.empty()) {
    json t = json::object();
    if (!o.upstream_ca.empty()) t["ca_file"] = o.upstream_ca;
    if (!o.upstream_sni.empty()) t["sni"] = o.upstream_sni;
    if (!o.upstream_verify.empty()) t["verify"] = o.upstream_verify == "on";
    if (!o.upstream_cert.empty()) t["client_cert"] = o.upstream_cert;
    b["upstream_tls"] = t;
  }
  if (!o.tls.empty()) b["tls"] = o.tls;
  if (o.cache == "on" || o.cache == "off") {
    b["cache"] = o.cache == "on";
  } else if (!o.cache.empty()) {
    json c = json::parse(o.cache, nullptr, false);
    if (c.is_discarded() || !c.is_object()) die(2, "--cache: expected on, off or a JSON object");
    b["cache"] = c;
  }
  if (o.passthrough) b["passthrough"] = true;
  if (o.disabled) b["enabled"] = false;
  (void)partial;
  return b;
}

// What a listed route or stream's "errors" say: each pxd's reason, after its host's name in a fleet ("-": none).
std::string errors_text(const json& o) {
  std::string out;
  for (const auto& e : o.value("errors", json::array())) {
    std::string host = e.value("host", "");
    out += (out.empty() ? "" : "; ") + (host.empty() ? "" : host + ": ") + e.value("error", "");
  }
  return out.empty() ? "-" : out;
}

void show_routes(const json& list) {
  if (g.as_json) return print(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : list)
    rows.push_back({r.value("name", ""), join(r["hosts"]), r.value("path", "/"), join(r["upstreams"]),
                    r.value("lb", ""), r.value("enabled", true) ? "yes" : "no", std::to_string(r.value("version", 0)),
                    errors_text(r)});
  table({"NAME", "HOSTS", "PATH", "UPSTREAMS", "LB", "ENABLED", "VERSION", "ERROR"}, rows);
}

void show_acls(const json& list) {
  if (g.as_json) return print(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : list) {
    std::string rules;
    for (const auto& r : a["rules"])
      rules += (rules.empty() ? "" : ",") + r["action"].get<std::string>() + " " + r["cidr"].get<std::string>();
    std::string users;
    for (const auto& u : a["users"]) users += (users.empty() ? "" : ",") + u["username"].get<std::string>();
    rows.push_back({a.value("name", ""), rules.empty() ? "-" : rules, users.empty() ? "-" : users,
                    a.value("default", ""), a.value("satisfy", ""), std::to_string(a.value("version", 0))});
  }
  table({"NAME", "RULES", "USERS", "DEFAULT", "SATISFY", "VERSION"}, rows);
}

std::string when(const json& c, const char* key) {
  if (!c.contains(key) || !c[key].is_number_integer()) return "-";
  time_t t = c[key].get<int64_t>();
  tm g;
  gmtime_r(&t, &g);
  char b[64];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M", &g);
  return b;
}

std::string problem_line(const json& p) {
  if (!p.is_object()) return "-";
  std::string s = p.value("detail", p.value("type", std::string("error")));
  if (p.contains("authorizations") && p["authorizations"].is_array())
    for (const auto& a : p["authorizations"])
      if (a.contains("error") && a["error"].is_object())
        s += " (" + a.value("identifier", std::string()) + ": " + a["error"].value("detail", std::string()) + ")";
  return s;
}

void show_certs(const json& list) {
  if (g.as_json) return print(list);
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : list)
    rows.push_back({c.value("name", ""), join(c["names"]), c.value("issuer", "-"), c.value("not_after_text", "-"),
                    c.contains("days_left") ? std::to_string(c.value("days_left", 0)) : "-", c.value("source", ""),
                    c.value("status", "-"), when(c, "last_attempt"), when(c, "next_attempt"),
                    c.contains("last_error") ? problem_line(c["last_error"]) : "-"});
  table({"NAME", "NAMES", "ISSUER", "NOT AFTER", "DAYS LEFT", "SOURCE", "STATUS", "LAST ATTEMPT", "NEXT ATTEMPT",
         "LAST ERROR"},
        rows);
}

std::string read_input(const std::string& file) {
  std::stringstream ss;
  if (file == "-")
    ss << std::cin.rdbuf();
  else {
    std::ifstream f(file);
    if (!f) die(2, file + ": " + std::strerror(errno));
    ss << f.rdbuf();
  }
  return ss.str();
}

const char* kCompletion =
    R"BASH(# bash completion for pxctl; install: pxctl completion bash > /etc/bash_completion.d/pxctl
_pxctl() {
  local cur prev words cword
  _init_completion 2>/dev/null || { cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"; cword=$COMP_CWORD; words=("${COMP_WORDS[@]}"); }
  local top="route stream acl cert cache filter export import audit status fleet token user completion"
  case "${words[1]}" in
    route) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "add list show set rm enable disable" -- "$cur")); return; }
           COMPREPLY=($(compgen -W "--host --passthrough --upstream --upstream-ca --upstream-sni --upstream-verify --upstream-client-cert --tls --path --strip-path --no-strip-path --lb --filter --max-body-size --connect-timeout --read-timeout --health-path --cache --disabled --if-match --json" -- "$cur")); return ;;
    cache) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "purge stats" -- "$cur")); return; }
           COMPREPLY=($(compgen -W "--path --all --json" -- "$cur")); return ;;
    stream) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "add list show set rm enable disable" -- "$cur")); return; }
            COMPREPLY=($(compgen -W "--listen --upstream --lb --acl --proxy-protocol --accept-proxy --tls --host --connect-timeout --idle-timeout --max-lifetime --max-connections --rate --health-interval --disabled --if-match --json" -- "$cur")); return ;;
    acl) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "add list show set rm user" -- "$cur")); return; }
         [ "${words[2]}" = user ] && [ "$cword" -eq 3 ] && { COMPREPLY=($(compgen -W "add rm" -- "$cur")); return; }
         COMPREPLY=($(compgen -W "--rule --default --satisfy --realm --pass-authorization --password-stdin --if-match --json" -- "$cur")); return ;;
    token) [ "$cword" -eq 2 ] && COMPREPLY=($(compgen -W "create list rm" -- "$cur")); return ;;
    cert) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "add list show renew rm" -- "$cur")); return; }
          COMPREPLY=($(compgen -f -W "--cert --key --json" -- "$cur")); return ;;
    export) COMPREPLY=($(compgen -f -W "--output --include-keys" -- "$cur")); return ;;
    filter) [ "$cword" -eq 2 ] && { COMPREPLY=($(compgen -W "list check" -- "$cur")); return; }
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
    import) COMPREPLY=($(compgen -f -W "--dry-run --replace" -- "$cur")); return ;;
    audit) COMPREPLY=($(compgen -W "--resource --action --credential --since --limit --json" -- "$cur")); return ;;
    completion) COMPREPLY=($(compgen -W "bash" -- "$cur")); return ;;
  esac
  COMPREPLY=($(compgen -W "$top --socket --url --token --json --help --version" -- "$cur"))
}
complete -F _pxctl pxctl
)BASH";

}  // namespace

// pxctl trace: the record pxd wrote for a traced request, for people.
void show_trace(const json& t, const std::string& method, const std::string& url) {
  auto num = [](const json& v) {
    char b[32];
    snprintf(b, sizeof b, "%.3f", v.is_number() ? v.get<double>() : 0.0);
    return std::string(b);
  };
  std::cout << method << " " << url << "\n";
  std::cout << "  status     " << t.value("status", 0) << " (" << t.value("termination", "") << ") in "
            << t.value("duration_ms", 0) << " ms";
  const json& rq = t["request"];
  if (!rq.value("request_id", std::string()).empty()) std::cout << ", request id " << rq.value("request_id", "");
  std::cout << "\n";
  if (t["route"].is_object())
    std::cout << "  route      " << t["route"].value("name", "") << ": " << t["route"].value("why", "") << "\n";
  else
    std::cout << "  route      none matched\n";
  bool first = true;
  for (const auto& f : t["filters"]) {
    std::cout << (first ? "  filters    " : "             ") << f.value("phase", "") << "  " << f.value("filter", "")
              << "  " << f.value("verdict", "") << "  " << num(f["ms"]) << " ms\n";
    first = false;
  }
  if (first) std::cout << "  filters    none ran\n";
  const json& up = t["upstream"];
  if (!up.value("balancer", std::string()).empty()) {
    std::cout << "  balancer   " << up.value("balancer", "") << "\n";
    for (const auto& p : up["peers"]) std::cout << "             " << p.get<std::string>() << "\n";
  }
  int n = 0;
  for (const auto& a : up["attempts"])
    std::cout << "  attempt " << ++n << "  " << a.value("peer", "") << ": " << a.value("why", "") << " -> "
              << a.value("outcome", "") << "\n";
  if (t.contains("cache")) {
    std::cout << "  cache      " << t["cache"].value("result", "");
    if (t["cache"].contains("detail")) std::cout << " (" << t["cache"].value("detail", "") << ")";
    std::cout << "\n";
  }
  if (up.value("status", 0))
    std::cout << "  upstream   status " << up.value("status", 0) << ", connect "
              << (up["connect_ms"].is_null() ? std::string("(kept-alive connection)") : num(up["connect_ms"]) + " ms")
              << ", first byte "
              << (up["first_byte_ms"].is_null() ? std::string("-") : num(up["first_byte_ms"]) + " ms") << "\n";
  std::cout << "  phases    ";
  for (const char* k : {"early_request", "request", "upstream_peer", "upstream_request", "response", "logging"})
    if (t["phases_ms"].contains(k)) std::cout << " " << k << " " << num(t["phases_ms"][k]) << " ms";
  std::cout << "\n  bytes      " << t.value("bytes_in", 0) << " in, " << t.value("bytes_out", 0) << " out\n";
}

int main(int argc, char** argv) {
  if (const char* u = std::getenv("PX_ADMIN_URL")) g.url = u;
  if (const char* t = std::getenv("PX_TOKEN")) g.token = t;
  if (const char* s = std::getenv("PX_ADMIN_SOCKET")) g.socket = s;
  CLI::App app{"pxctl: manage px routes, access lists and tokens through pxadmind"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand: pxctl cert list --json
  app.add_option("--socket", g.socket, "pxadmind's unix socket ($PX_ADMIN_SOCKET)")->capture_default_str();
  app.add_option("--url", g.url, "pxadmind over TCP, http://HOST:PORT ($PX_ADMIN_URL)");
  app.add_option("--token", g.token, "bearer token for --url ($PX_TOKEN)");
  app.add_flag("--json", g.as_json, "print JSON instead of tables");
  app.add_flag("--no-wait", g.no_wait,
               "return once pxadmind stored a change, without waiting (up to 10 s) for this host's pxd to serve it");
  app.set_version_flag("-V,--version", std::string("pxctl ") + PX_VERSION);

  // route
  auto* route = app.add_subcommand("route", "add, list, show, change and remove routes");
  route->require_subcommand(1);
  std::string name, if_match;
  RouteOpts ro;
  auto* r_add = route->add_subcommand("add", "add a route");
  r_add->add_option("name", name, "route name")->required();
  add_route_options(r_add, ro, false);
  r_add->callback([&] {
    if (ro.hosts.empty()) die(2, "route add: at least one --host is required");
    if (ro.upstreams.empty()) die(2, "route add: at least one --upstream is required");
    json b = route_body(ro, false);
    b["name"] = name;
    Reply r = check(call("POST", "/v1/routes", &b));
    if (g.as_json)
      print(r.body);
    else
      std::cout << "route " << name << " added (version " << r.body.value("version", 0) << ")\n";
  });
  auto* r_list = route->add_subcommand("list", "list routes");
  r_list->callback([&] { show_routes(check(call("GET", "/v1/routes")).body); });
  auto* r_show = route->add_subcommand("show", "show one route");
  r_show->add_option("name", name)->required();
  r_show->callback([&] { print(check(call("GET", "/v1/routes/" + url_escape(name))).body); });
  auto* r_set = route->add_subcommand("set", "change some fields of a route (the others stay)");
  r_set->add_option("name", name)->required();
  add_route_options(r_set, ro, true);
  r_set->add_option("--if-match", if_match, "only if the route is still at this version");
  std::string record_n;
  std::vector<std::string> record_mask;
  r_set->add_option("--record", record_n,
                    "pxd records the next N requests (heads only) for pxctl filter test; 0 stops");
  r_set->add_option("--record-mask", record_mask,
                    "with --record: a header whose values are masked (repeat; Authorization, Cookie and "
                    "Proxy-Authorization always are)");
  r_set->callback([&] {
    json b = route_body(ro, true);
    if (!record_n.empty()) {
      uint64_t n;
      if (!px::parse_u64(record_n, &n) || n > 10000) die(2, "--record: expected a number of requests, 0 to 10000");
      b["record"] = n ? json{{"count", n}, {"mask", record_mask}, {"id", std::to_string(time(nullptr))}} : json();
    }
    if (b.empty()) die(2, "route set: nothing to change (see --help)");
    Reply r = check(call("PATCH", "/v1/routes/" + url_escape(name), &b, if_match));
    if (g.as_json)
      print(r.body);
    else
      std::cout << "route " << name << " changed (version " << r.body.value("version", 0) << ")\n";
  });
  for (const auto& ve : {std::pair<const char*, bool>{"enable", true}, {"disable", false}}) {
    const char* verb = ve.first;  // (named, not a structured binding: clang 14 cannot capture those)
    bool enabled = ve.second;
    auto* c = route->add_subcommand(verb, std::string(verb) + " a route");
    c->add_option("name", name)->required();
    c->callback([&, enabled, verb] {
      json b = {{"enabled", enabled}};
      Reply r = check(call("PATCH", "/v1/routes/" + url_escape(name), &b));
      if (g.as_json)
        print(r.body);
      else
        std::cout << "route " << name << " " << verb << "d\n";
    });
  }
  auto* r_records = route->add_subcommand(
      "records", "the requests pxd recorded for a route (route set --record), as JSON lines for pxctl filter test");
  r_records->add_option("name", name)->required();
  r_records->callback([&] {
    json b = check(call("GET", "/v1/routes/" + url_escape(name) + "/records")).body;
    for (const auto& rec : b["records"]) std::cout << rec.dump() << "\n";
  });
  auto* r_rm = route->add_subcommand("rm", "remove a route");
  r_rm->add_option("name", name)->required();
  r_rm->add_option("--if-match", if_match, "only if the route is still at this version");
  r_rm->callback([&] {
    check(call("DELETE", "/v1/routes/" + url_escape(name), nullptr, if_match));
    if (!g.as_json) std::cout << "route " << name << " removed\n";
  });

  // stream
  auto* stream = app.add_subcommand("stream", "TCP and UDP proxying: add, list, show, change and remove streams");
  stream->require_subcommand(1);
  struct {
    std::string listen, lb, acl, proxy_protocol, tls, accept_proxy;
    std::vector<std::string> upstreams, hosts;
    std::string connect_ms, idle_ms, lifetime_ms, rate, health_ms;  // durations and sizes, with their units
    int64_t max_conns = -1;
    bool disabled = false;
  } so;
  auto stream_options = [&](CLI::App* c, bool for_set) {
    c->add_option("--listen", so.listen, "ADDRESS:PORT[/udp] to listen on (0.0.0.0:5432, [::]:53/udp)");
    c->add_option("--upstream", so.upstreams, "peer tcp://HOST:PORT or udp://HOST:PORT[#WEIGHT] (repeat)");
    c->add_option("--lb", so.lb, "round_robin, least_conn or hash (on the client address)")
        ->check(CLI::IsMember({"round_robin", "least_conn", "hash"}));
    c->add_option("--acl", so.acl, "an access list whose CIDR rules admit clients");
    c->add_option("--proxy-protocol", so.proxy_protocol, "PROXY protocol to the upstream: off, v1 or v2")
        ->check(CLI::IsMember({"off", "v1", "v2"}));
    c->add_option("--accept-proxy", so.accept_proxy,
                  "on: clients open with a PROXY v1/v2 header (only pxd.conf's trusted_proxies may send one)")
        ->check(CLI::IsMember({"on", "off"}));
    c->add_option("--tls", so.tls, "terminate TLS: auto (ACME for --host), off, or a stored certificate's name");
    c->add_option("--host", so.hosts, "a name --tls auto certifies (repeat)");
    c->add_option("--connect-timeout", so.connect_ms, "ms, or 500ms, 5s (0 = pxd.conf's upstream_connect_timeout)");
    c->add_option("--idle-timeout", so.idle_ms, "ms, or 30s, 10m (0 = 10 min for TCP, 30 s for UDP sessions)");
    c->add_option("--max-lifetime", so.lifetime_ms, "ms, or 1h, a connection may last (0 = no limit)");
    c->add_option("--max-connections", so.max_conns, "connections or UDP sessions at once (0 = pxd.conf's)");
    c->add_option("--rate", so.rate, "bytes per second per connection, each way, or 64k, 10m (0 = unlimited)");
    c->add_option("--health-interval", so.health_ms,
                  "active health checks (TCP connects) every ms, or 5s (TCP streams)");
    if (!for_set) c->add_flag("--disabled", so.disabled, "add it disabled");
  };
  auto stream_body = [&]() {
    json b = json::object();
    if (!so.listen.empty()) b["listen"] = so.listen;
    if (!so.upstreams.empty()) {
      json ups = json::array();
      for (const auto& u : so.upstreams) {
        size_t hash = u.find('#');
        if (hash == std::string::npos) {
          ups.push_back(u);
          continue;
        }
        char* end;
        long w = std::strtol(u.c_str() + hash + 1, &end, 10);
        if (*end || w < 1) die(2, "--upstream " + u + ": the weight after '#' must be a positive number");
        ups.push_back({{"url", u.substr(0, hash)}, {"weight", w}});
      }
      b["upstreams"] = ups;
    }
    if (!so.lb.empty()) b["lb"] = so.lb;
    if (!so.acl.empty()) b["acl"] = so.acl;
    if (!so.proxy_protocol.empty()) b["proxy_protocol"] = so.proxy_protocol;
    if (!so.accept_proxy.empty()) b["accept_proxy"] = so.accept_proxy == "on";
    if (!so.tls.empty()) b["tls"] = so.tls;
    if (!so.hosts.empty()) b["hosts"] = so.hosts;
    if (!so.connect_ms.empty()) b["connect_timeout_ms"] = duration_flag("--connect-timeout", so.connect_ms, 1);
    if (!so.idle_ms.empty()) b["idle_timeout_ms"] = duration_flag("--idle-timeout", so.idle_ms, 1);
    if (!so.lifetime_ms.empty()) b["max_lifetime_ms"] = duration_flag("--max-lifetime", so.lifetime_ms, 1);
    if (so.max_conns >= 0) b["max_connections"] = so.max_conns;
    if (!so.rate.empty()) b["rate_bytes_per_s"] = size_flag("--rate", so.rate);
    if (!so.health_ms.empty())
      b["health_check"] = {{"interval_ms", duration_flag("--health-interval", so.health_ms, 1)}};
    if (so.disabled) b["enabled"] = false;
    return b;
  };
  auto* s_add = stream->add_subcommand("add", "add a stream");
  s_add->add_option("name", name, "stream name")->required();
  stream_options(s_add, false);
  s_add->callback([&] {
    if (so.listen.empty()) die(2, "stream add: --listen is required");
    if (so.upstreams.empty()) die(2, "stream add: at least one --upstream is required");
    json b = stream_body();
    b["name"] = name;
    Reply r = check(call("POST", "/v1/streams", &b));
    if (g.as_json) return print(r.body);
    std::cout << "stream " << name << " added (version " << r.body.value("version", 0) << ")\n";
  });
  stream->add_subcommand("list", "list streams")->callback([&] {
    json list = check(call("GET", "/v1/streams")).body;
    if (g.as_json) return print(list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& st : list) {
      std::string ups;
      for (const auto& u : st["upstreams"]) ups += (ups.empty() ? "" : ",") + u.value("url", "");
      rows.push_back({st.value("name", ""), st.value("listen", "") + "/" + st.value("protocol", ""), ups,
                      st.value("lb", ""), st.value("acl", "-"), st.value("tls", "off"),
                      st.value("enabled", true) ? "yes" : "no", std::to_string(st.value("version", 0)),
                      errors_text(st)});
    }
    table({"NAME", "LISTEN", "UPSTREAMS", "LB", "ACL", "TLS", "ENABLED", "VERSION", "ERROR"}, rows);
  });
  auto* s_show = stream->add_subcommand("show", "show one stream");
  s_show->add_option("name", name)->required();
  s_show->callback([&] { print(check(call("GET", "/v1/streams/" + url_escape(name))).body); });
  auto* s_set = stream->add_subcommand("set", "change some fields of a stream (the others stay)");
  s_set->add_option("name", name)->required();
  stream_options(s_set, true);
  s_set->add_option("--if-match", if_match, "only if the stream is still at this version");
  s_set->callback([&] {
    json b = stream_body();
    if (b.empty()) die(2, "stream set: nothing to change (see --help)");
    Reply r = check(call("PATCH", "/v1/streams/" + url_escape(name), &b, if_match));
    if (g.as_json) return print(r.body);
    std::cout << "stream " << name << " changed (version " << r.body.value("version", 0) << ")\n";
  });
  for (const auto& ve : {std::pair<const char*, bool>{"enable", true}, {"disable", false}}) {
    const char* verb = ve.first;  // (named, not a structured binding: clang 14 cannot capture those)
    bool enabled = ve.second;
    auto* c = stream->add_subcommand(verb, std::string(verb) + " a stream");
    c->add_option("name", name)->required();
    c->callback([&, enabled, verb] {
      json b = {{"enabled", enabled}};
      Reply r = check(call("PATCH", "/v1/streams/" + url_escape(name), &b));
      if (g.as_json) return print(r.body);
      std::cout << "stream " << name << " " << verb << "d\n";
    });
  }
  auto* s_rm = stream->add_subcommand("rm", "remove a stream");
  s_rm->add_option("name", name)->required();
  s_rm->add_option("--if-match", if_match, "only if the stream is still at this version");
  s_rm->callback([&] {
    check(call("DELETE", "/v1/streams/" + url_escape(name), nullptr, if_match));
    if (!g.as_json) std::cout << "stream " << name << " removed\n";
  });

  // acl
  auto* acl = app.add_subcommand("acl", "access lists: CIDR rules and basic-auth users");
  acl->require_subcommand(1);
  std::vector<std::string> rules;
  std::string def, satisfy, realm;
  bool pass_auth = false;
  auto acl_body = [&]() {
    json b = json::object();
    if (!rules.empty()) {
      json rs = json::array();
      for (const auto& r : rules) {
        size_t eq = r.find('=');
        if (eq == std::string::npos) die(2, "--rule " + r + ": expected allow=CIDR or deny=CIDR");
        rs.push_back({{"action", r.substr(0, eq)}, {"cidr", r.substr(eq + 1)}});
      }
      b["rules"] = rs;
    }
    if (!def.empty()) b["default"] = def;
    if (!satisfy.empty()) b["satisfy"] = satisfy;
    if (!realm.empty()) b["realm"] = realm;
    if (pass_auth) b["pass_authorization"] = true;
    return b;
  };
  auto acl_opts = [&](CLI::App* c) {
    c->add_option("--rule", rules, "allow=CIDR or deny=CIDR (repeat; the first match wins)");
    c->add_option("--default", def, "allow or deny when no rule matches")->check(CLI::IsMember({"allow", "deny"}));
    c->add_option("--satisfy", satisfy, "any or all (rules and users)")->check(CLI::IsMember({"any", "all"}));
    c->add_option("--realm", realm, "basic-auth realm");
    c->add_flag("--pass-authorization", pass_auth, "pass the Authorization header upstream");
  };
  auto* a_add = acl->add_subcommand("add", "add an access list");
  a_add->add_option("name", name)->required();
  acl_opts(a_add);
  a_add->callback([&] {
    json b = acl_body();
    b["name"] = name;
    Reply r = check(call("POST", "/v1/acls", &b));
    if (g.as_json)
      print(r.body);
    else
      std::cout << "acl " << name << " added\n";
  });
  acl->add_subcommand("list", "list access lists")->callback([&] { show_acls(check(call("GET", "/v1/acls")).body); });
  auto* a_show = acl->add_subcommand("show", "show one access list");
  a_show->add_option("name", name)->required();
  a_show->callback([&] { print(check(call("GET", "/v1/acls/" + url_escape(name))).body); });
  auto* a_set = acl->add_subcommand("set", "change an access list");
  a_set->add_option("name", name)->required();
  acl_opts(a_set);
  a_set->add_option("--if-match", if_match);
  a_set->callback([&] {
    json b = acl_body();
    if (b.empty()) die(2, "acl set: nothing to change (see --help)");
    Reply r = check(call("PATCH", "/v1/acls/" + url_escape(name), &b, if_match));
    if (g.as_json)
      print(r.body);
    else
      std::cout << "acl " << name << " changed\n";
  });
  auto* a_rm = acl->add_subcommand("rm", "remove an access list");
  a_rm->add_option("name", name)->required();
  a_rm->add_option("--if-match", if_match);
  a_rm->callback([&] {
    check(call("DELETE", "/v1/acls/" + url_escape(name), nullptr, if_match));
    if (!g.as_json) std::cout << "acl " << name << " removed\n";
  });
  auto* a_user = acl->add_subcommand("user", "basic-auth users of an access list");
  a_user->require_subcommand(1);
  std::string user, password;
  bool pw_stdin = false;
  auto* u_add = a_user->add_subcommand("add", "add (or reset) a user; the password is hashed with yescrypt");
  u_add->add_option("acl", name)->required();
  u_add->add_option("user", user)->required();
  u_add->add_option("--password", password, "the password (visible in ps; prefer --password-stdin)");
  u_add->add_flag("--password-stdin", pw_stdin, "read the password from standard input");
  u_add->callback([&] {
    if (pw_stdin) {
      std::getline(std::cin, password);
    }
    if (password.empty()) die(2, "acl user add: give --password or --password-stdin");
    json b = {{"username", user}, {"password", password}};
    check(call("POST", "/v1/acls/" + url_escape(name) + "/users", &b));
    if (!g.as_json) std::cout << "user " << user << " added to acl " << name << "\n";
  });
  auto* u_rm = a_user->add_subcommand("rm", "remove a user");
  u_rm->add_option("acl", name)->required();
  u_rm->add_option("user", user)->required();
  u_rm->callback([&] {
    check(call("DELETE", "/v1/acls/" + url_escape(name) + "/users/" + url_escape(user)));
    if (!g.as_json) std::cout << "user " << user << " removed from acl " << name << "\n";
  });

  // cert
  auto* cert = app.add_subcommand("cert", "TLS certificates: what pxd's TLS listeners serve, chosen by SNI");
  cert->require_subcommand(1);
  std::string cert_file, key_file;
  auto* c_add = cert->add_subcommand("add", "add or replace a certificate (checked: key, chain order, expiry, names)");
  c_add->add_option("name", name)->required();
  c_add->add_option("--cert", cert_file, "PEM: the certificate, then its intermediates (fullchain.pem)")->required();
  c_add->add_option("--key", key_file, "PEM: its private key (ECDSA or RSA, unencrypted)")->required();
  c_add->callback([&] {
    json b = {{"cert", read_input(cert_file)}, {"key", read_input(key_file)}};
    Reply r = check(call("PUT", "/v1/certs/" + url_escape(name), &b));
    if (g.as_json) return print(r.body);
    std::cout << "cert " << name << (r.status == 201 ? " added" : " replaced") << ": " << join(r.body["names"])
              << ", not after " << r.body.value("not_after_text", "") << "\n";
  });
  cert->add_subcommand("list", "list certificates (names, issuer, expiry, source, last error)")->callback([&] {
    show_certs(check(call("GET", "/v1/certs")).body);
  });
  auto* c_show = cert->add_subcommand("show", "show one certificate (never its key)");
  c_show->add_option("name", name)->required();
  c_show->callback([&] { print(check(call("GET", "/v1/certs/" + url_escape(name))).body); });
  auto* c_renew = cert->add_subcommand("renew", "renew a certificate ACME keeps, now, and wait for the outcome");
  c_renew->add_option("name", name)->required();
  bool no_wait = false;
  std::string wait_arg = "300";
  c_renew->add_flag("--no-wait", no_wait, "only ask; pxctl cert list shows the outcome");
  c_renew->add_option("--wait", wait_arg, "how long to wait for the outcome: seconds, or 90s, 5m")
      ->capture_default_str();
  c_renew->callback([&] {
    uint64_t wait_ms = duration_flag("--wait", wait_arg, 1000);  // checked before anything is asked
    Reply old = call("GET", "/v1/certs/" + url_escape(name));
    std::string serial = old.status == 200 ? old.body.value("serial", std::string()) : "";
    json empty = json::object();
    Reply r = check(call("POST", "/v1/certs/" + url_escape(name) + "/renew", &empty));
    if (no_wait) {
      if (g.as_json) return print(r.body);
      std::cout << "cert " << name << ": renewal requested\n";
      return;
    }
    for (uint64_t i = 0; i < wait_ms / 100; i++) {
      usleep(100000);
      json c = check(call("GET", "/v1/certs/" + url_escape(name))).body;
      if (c.value("forced", false) || c.value("status", std::string()) == "ordering") continue;
      if (g.as_json) return print(c);
      if (c.value("status", std::string()) == "valid" && c.value("serial", std::string()) != serial) {
        std::cout << "cert " << name << " renewed: " << join(c["names"]) << ", not after "
                  << c.value("not_after_text", "") << "\n";
        return;
      }
      die(1, "cert " + name + " was not renewed: " + problem_line(c.value("last_error", json())) +
                 (c.contains("next_attempt") ? "; next attempt " + when(c, "next_attempt") + " UTC" : ""));
    }
    die(1, "cert " + name + ": no outcome within " + wait_arg + (wait_arg.back() <= '9' ? " s" : "") +
               " (pxctl cert list shows it later)");
  });
  auto* c_rm = cert->add_subcommand("rm", "remove a certificate");
  c_rm->add_option("name", name)->required();
  c_rm->callback([&] {
    check(call("DELETE", "/v1/certs/" + url_escape(name)));
    if (!g.as_json) std::cout << "cert " << name << " removed\n";
  });

  // export / import
  std::string out_file;
  bool include_keys = false;
  auto* exp = app.add_subcommand("export", "print the whole configuration as one JSON document");
  exp->add_option("-o,--output", out_file, "write to this file instead");
  exp->add_flag("--include-keys", include_keys, "include certificates' private keys (keep the file secret)");
  exp->callback([&] {
    json doc = check(call("GET", include_keys ? "/v1/config?include_keys=1" : "/v1/config")).body;
    if (out_file.empty())
      print(doc);
    else {
      std::ofstream f(out_file);
      if (include_keys) ::chmod(out_file.c_str(), 0600);  // private keys: readable by the owner only
      f << doc.dump(2) << "\n";
      if (!f) die(1, out_file + ": cannot write");
    }
  });
  std::string in_file;
  bool dry = false, replace = false;
  auto* imp = app.add_subcommand("import", "apply a configuration document in one transaction");
  imp->add_option("file", in_file, "the JSON document, or - for standard input")->required();
  imp->add_flag("--dry-run", dry, "print what would change, change nothing");
  imp->add_flag("--replace", replace, "remove what the document does not name (default: merge)");
  imp->callback([&] {
    json doc = json::parse(read_input(in_file), nullptr, false);
    if (doc.is_discarded()) die(2, in_file + ": not valid JSON");
    std::string path = std::string("/v1/config?mode=") + (replace ? "replace" : "merge") + (dry ? "&dry_run=1" : "");
    Reply r = check(call("POST", path, &doc));
    if (g.as_json) return print(r.body);
    const json& d = r.body["diff"];
    auto list = [&](const char* sign, const char* key) {
      for (const auto& x : d[key]) std::cout << sign << " " << x.get<std::string>() << "\n";
    };
    list("+", "added");
    list("~", "changed");
    list("-", "removed");
    std::cout << (dry ? "dry run: nothing changed; " : "") << d["added"].size() << " added, " << d["changed"].size()
              << " changed, " << d["removed"].size() << " removed, " << d["unchanged"].get<int>() << " unchanged\n";
  });

  // audit
  std::string resource, action, credential;
  uint64_t since = 0, limit = 100;
  auto* aud = app.add_subcommand("audit", "who changed what, and when");
  aud->add_option("--resource", resource, "route/NAME, acl/NAME, or a prefix such as route/");
  aud->add_option("--action", action, "e.g. route.create, route.update, route.delete, config.import");
  aud->add_option("--credential", credential, "uid:N or token:NAME");
  aud->add_option("--since", since, "only records after this sequence number");
  aud->add_option("--limit", limit, "at most this many (the most recent)")->capture_default_str();
  aud->callback([&] {
    std::string q = "/v1/audit?limit=" + std::to_string(limit);
    if (since) q += "&since=" + std::to_string(since);
    if (!resource.empty()) q += "&resource=" + url_escape(resource);
    if (!action.empty()) q += "&action=" + url_escape(action);
    if (!credential.empty()) q += "&credential=" + url_escape(credential);
    json list = check(call("GET", q)).body;
    if (g.as_json) return print(list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : list)
      rows.push_back({std::to_string(a.value("seq", 0)), a.value("time", ""), a.value("credential", ""),
                      a.value("action", ""), a.value("resource", "")});
    table({"SEQ", "TIME", "CREDENTIAL", "ACTION", "RESOURCE"}, rows);
  });

  // status
  app.add_subcommand("status", "store generation and what each pxd serves")->callback([&] {
    json s = check(call("GET", "/v1/status")).body;
    if (g.as_json) return print(s);
    std::cout << "store " << s.value("data_dir", "") << ": generation " << s.value("generation", 0) << ", schema "
              << s.value("schema", 0) << "\n";
    if (s.contains("fleet")) {
      const json& f = s["fleet"];
      const json& e = f["etcd"];
      std::cout << "fleet " << f.value("name", "") << " (host " << f.value("host", "") << "): applied revision "
                << f.value("applied_revision", 0) << ", etcd "
                << (e.value("reachable", false) ? "reachable since " : "unreachable since ") << e.value("since", "");
      if (!e.value("reachable", false)) std::cout << " (" << e.value("last_error", "") << ")";
      std::cout << "\n";
    }
    for (const auto& p : s["pxd"]) {
      if (!p.value("running", false)) {
        std::cout << "pxd (" << p.value("status_file", "") << "): not running\n";
        continue;
      }
      std::cout << "pxd pid " << p.value("pid", 0) << ": " << p.value("workers", 0) << " workers, generation "
                << p.value("generation", 0) << (p.value("in_sync", false) ? " (in sync)" : " (behind)") << "\n";
    }
  });

  // fleet
  auto* fl = app.add_subcommand("fleet", "the hosts of a fleet (pxadmind --etcd)");
  fl->require_subcommand(1);
  fl->add_subcommand("status", "every host: applied revision, lag, pxd in sync, etcd, last error, last seen")
      ->callback([&] {
        json f = check(call("GET", "/v1/fleet")).body;
        if (g.as_json) return print(f);
        const json& self = f["self"];
        const json& etcd = self["etcd"];
        std::cout << "fleet " << self.value("name", "") << ", host " << self.value("host", "") << ": ";
        if (etcd.value("reachable", false))
          std::cout << "etcd reachable since " << etcd.value("since", "");
        else
          std::cout << "etcd unreachable since " << etcd.value("since", "") << " (" << etcd.value("last_error", "")
                    << ")";
        std::cout << ", applied revision " << self.value("applied_revision", 0) << "\n";
        json rejected = self.value("rejected", json::object());
        for (const auto& [key, why] : rejected.items())
          std::cout << "refused from etcd: " << key << ": " << why.get<std::string>() << "\n";
        if (f.contains("error")) {
          std::cout << "other hosts: unknown (" << f.value("error", "") << ")\n";
          return;
        }
        std::vector<std::vector<std::string>> rows;
        for (const auto& h : f["hosts"]) {
          std::string pxd = "-", streams;
          for (const auto& p : h.value("pxd", json::array())) {
            pxd = !p.value("running", false) ? "not running" : p.value("in_sync", false) ? "in sync" : "behind";
            json se = p.value("stream_errors", json::object());
            for (const auto& [n, why] : se.items())
              streams += (streams.empty() ? "" : "; ") + ("stream " + n + ": " + why.get<std::string>());
          }
          const json& e = h.value("etcd", json::object());
          std::string err = e.value("last_error", "");
          if (!streams.empty()) err = streams + (err.empty() ? "" : "; " + err);
          if (!h.value("rejected", json::object()).empty())
            err = std::to_string(h["rejected"].size()) + " key(s) refused" + (err.empty() ? "" : "; " + err);
          rows.push_back({h.value("host", ""), h.value("version", ""), std::to_string(h.value("applied_revision", 0)),
                          std::to_string(h.value("lag", 0)), pxd, e.value("reachable", false) ? "ok" : "unreachable",
                          err.empty() ? "-" : err, when(h, "published")});
        }
        table({"HOST", "VERSION", "APPLIED", "LAG", "PXD", "ETCD", "LAST ERROR", "LAST SEEN"}, rows);
      });

  // tokens
  auto* tok = app.add_subcommand("token", "API tokens for pxadmind's TCP listener");
  tok->require_subcommand(1);
  auto* t_create = tok->add_subcommand("create", "create a token; it is shown once");
  t_create->add_option("name", name)->required();
  t_create->callback([&] {
    json b = {{"name", name}};
    Reply r = check(call("POST", "/v1/tokens", &b));
    if (g.as_json)
      print(r.body);
    else
      std::cout << r.body.value("token", "") << "\n";
  });
  tok->add_subcommand("list", "list tokens (names only)")->callback([&] {
    json list = check(call("GET", "/v1/tokens")).body;
    if (g.as_json) return print(list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : list) rows.push_back({t.value("name", ""), t.value("created", ""), t.value("created_by", "")});
    table({"NAME", "CREATED", "CREATED_BY"}, rows);
  });
  auto* t_rm = tok->add_subcommand("rm", "revoke a token");
  t_rm->add_option("name", name)->required();
  t_rm->callback([&] {
    check(call("DELETE", "/v1/tokens/" + url_escape(name)));
    if (!g.as_json) std::cout << "token " << name << " revoked\n";
  });

  // dashboard accounts
  auto* acct = app.add_subcommand("user", "web dashboard accounts (pxadmind --ui): admins and viewers");
  acct->require_subcommand(1);
  std::string acct_role = "viewer";
  auto* ua_add = acct->add_subcommand("add", "add an account; the password is hashed with yescrypt");
  ua_add->add_option("name", name)->required();
  ua_add->add_option("--role", acct_role, "admin (everything) or viewer (read only)")
      ->check(CLI::IsMember({"admin", "viewer"}))
      ->capture_default_str();
  ua_add->add_option("--password", password, "the password (visible in ps; prefer --password-stdin)");
  ua_add->add_flag("--password-stdin", pw_stdin, "read the password from standard input");
  ua_add->callback([&] {
    if (pw_stdin) std::getline(std::cin, password);
    if (password.empty()) die(2, "user add: give --password or --password-stdin");
    json b = {{"name", name}, {"password", password}, {"role", acct_role}};
    Reply r = check(call("POST", "/v1/users", &b));
    if (g.as_json) return print(r.body);
    std::cout << "user " << name << " added (" << acct_role << ")\n";
  });
  acct->add_subcommand("list", "list accounts")->callback([&] {
    json list = check(call("GET", "/v1/users")).body;
    if (g.as_json) return print(list);
    std::vector<std::vector<std::string>> rows;
    for (const auto& u : list)
      rows.push_back({u.value("name", ""), u.value("role", ""), u.value("totp", false) ? "on" : "off",
                      u.value("created", ""), u.value("created_by", "")});
    table({"NAME", "ROLE", "TOTP", "CREATED", "CREATED_BY"}, rows);
  });
  auto* ua_rm = acct->add_subcommand("rm", "remove an account (its sessions end)");
  ua_rm->add_option("name", name)->required();
  ua_rm->callback([&] {
    check(call("DELETE", "/v1/users/" + url_escape(name)));
    if (!g.as_json) std::cout << "user " << name << " removed\n";
  });

  // filters
  auto* fil = app.add_subcommand("filter", "Lua filters: what pxd loaded, and checking a file before it goes live");
  fil->require_subcommand(1);
  fil->add_subcommand("list", "filters pxd has loaded, and errors of files it refused")->callback([&] {
    json s = check(call("GET", "/v1/status")).body;
    json out = json::array();
    for (const auto& p : s["pxd"])
      if (p.value("running", false) && p.contains("filters")) {
        out = p["filters"];
        break;
      }
    if (g.as_json) return print(out);
    std::vector<std::vector<std::string>> rows;
    for (const auto& f : out)
      rows.push_back(
          {f.value("name", ""), f.value("ok", false) ? "ok" : "ERROR", f.value("path", ""), f.value("error", "")});
    table({"NAME", "STATE", "FILE", "ERROR"}, rows);
  });
  std::string filter_file, filter_config;
  auto* fcheck = fil->add_subcommand(
      "check",
      "compile a filter file as pxd would, without loading it; or, with --config, check a config for a filter");
  fcheck->add_option("file", filter_file, "the .lua file; with --config, the filter's name")->required();
  fcheck->add_option("--config", filter_config,
                     "a JSON config, checked by pxadmind as a route's would be (shape, the filter's own check, "
                     "the access lists it names)");
  fcheck->callback([&] {
    if (!filter_config.empty()) {
      json conf = json::parse(filter_config, nullptr, false);
      if (!conf.is_object()) die(2, "--config: expected a JSON object");
      Reply r = check(call("POST", "/v1/filters/" + url_escape(filter_file) + "/check", &conf));
      if (g.as_json) return print(r.body);
      std::cout << filter_file << ": config ok\n";
      return;
    }
    std::string src = read_input(filter_file);
    std::string err = px::lua::check_filter(filter_file, src, px::lua::lua_dir());
    if (!err.empty()) die(4, err);
    std::cout << filter_file << ": ok\n";
  });

  std::string test_requests;
  auto* ftest = fil->add_subcommand(
      "test", "run a filter offline, with px's engine and phases, over recorded requests (JSON lines)");
  ftest->add_option("filter", filter_file, "a built-in filter's name, or a .lua file")->required();
  ftest->add_option("--config", filter_config, "the route's JSON config for it");
  ftest
      ->add_option("--request", test_requests,
                   "a file of requests, one JSON object a line: method, uri, host, headers, client, tls, "
                   "response {status, headers} (pxctl route records writes them); - for stdin")
      ->required();
  ftest->callback([&] {
    std::string err, out = px::lua::test_filter(filter_file, filter_config, read_input(test_requests), &err);
    if (!err.empty()) die(4, err);
    if (g.as_json) {
      std::cout << out;
      return;
    }
    std::istringstream lines(out);
    for (std::string l; std::getline(lines, l);) {
      json r = json::parse(l);
      std::cout << "request " << r["request"].get<int>() << ": " << r.value("method", "") << " " << r.value("uri", "")
                << " -> " << r.value("result", "") << "\n";
      for (const auto& p : r["phases"]) {
        std::cout << "  " << p.value("phase", "") << ": " << p.value("verdict", "");
        if (p.contains("answer"))
          std::cout << " " << p["answer"]["status"].get<int>() << " " << p["answer"]["headers"].dump();
        if (p.contains("waits")) std::cout << " waits " << p["waits"].dump();
        std::cout << "\n";
      }
      for (const char* k : {"request_edits", "response_edits"})
        if (r.contains(k)) std::cout << "  " << k << ": " << r[k].dump() << "\n";
    }
  });

  auto* trace =
      app.add_subcommand("trace", "send one request through pxd and show its path: route, filters, peer, times");
  std::string t_url, t_method = "GET", t_data, t_connect, t_ca;
  std::vector<std::string> t_headers;
  bool t_insecure = false, t_body = false;
  std::string t_timeout = "30";
  trace->add_option("url", t_url, "http(s)://HOST[:PORT]/PATH as a client would ask for it")->required();
  trace->add_option("-X,--request", t_method, "the method")->capture_default_str();
  trace->add_option("-H,--header", t_headers, "a header field, 'Name: value' (repeatable)");
  trace->add_option("-d,--data", t_data, "a request body");
  trace->add_option("--connect", t_connect,
                    "connect to this ADDRESS:PORT instead of the URL's (Host and SNI stay the URL's)");
  trace->add_flag("-k,--insecure", t_insecure, "do not verify pxd's certificate");
  trace->add_option("--cacert", t_ca, "PEM CAs to verify pxd's certificate with");
  trace->add_flag("--body", t_body, "print the response body too");
  trace->add_option("--timeout", t_timeout, "how long to wait for the answer: seconds, or 500ms, 2m")
      ->capture_default_str();
  trace->callback([&] {
    json empty = json::object();
    json tk = check(call("POST", "/v1/traces", &empty)).body;
    px::http::ClientRequest rq;
    rq.method = t_method;
    rq.url = t_url;
    rq.body = t_data;
    rq.connect_to = t_connect;
    rq.user_agent = std::string("pxctl-trace/") + PX_VERSION;
    for (const auto& h : t_headers) {
      size_t colon = h.find(':');
      if (colon == std::string::npos || colon == 0) die(2, "-H '" + h + "': expected 'Name: value'");
      std::string v = h.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      rq.headers.emplace_back(h.substr(0, colon), v);
    }
    rq.headers.emplace_back(tk.value("header", "X-Px-Trace"), tk.value("token", ""));
    uint64_t timeout = duration_flag("--timeout", t_timeout, 1000);
    px::http::ClientResponse resp = px::http::Client::fetch_now(std::move(rq), [&](px::http::Client& client) {
      client.timeout_ms = timeout;
      client.max_body = 64 * 1024 * 1024;
      std::string err;
      if (!t_ca.empty() && !client.set_ca_file(t_ca, &err)) die(2, "--cacert: " + err);
      if (t_insecure) client.set_insecure();
    });
    if (resp.status == 0) die(1, t_url + ": " + resp.error);
    // pxd writes the record as the stream ends, just after the last byte went out.
    std::string id = tk.value("id", "");
    Reply rec;
    for (int i = 0; i < 600; i++) {  // up to 30 s: a busy machine
      rec = call("GET", "/v1/traces/" + id);
      if (rec.status != 404) break;
      usleep(50000);
    }
    if (rec.status == 404)
      die(1, "pxd kept no record of the request (did it reach this host's pxd? pxd with a status_file? " +
                 std::string("the answer was HTTP ") + std::to_string(resp.status) + ")");
    check(rec);
    if (g.as_json) return print(rec.body);
    show_trace(rec.body, t_method, t_url);
    if (t_body) std::cout << "\n" << resp.body;
  });

  auto* cache = app.add_subcommand("cache", "the response cache: purge stored responses, show what it did");
  cache->require_subcommand(1);
  auto* c_purge = cache->add_subcommand("purge", "drop a route's stored responses (audited): --path or --all");
  std::string cp_route, cp_path;
  bool cp_all = false;
  c_purge->add_option("route", cp_route, "the route")->required();
  c_purge->add_option("--path", cp_path, "the targets to drop: /path?query, '*' matches any run of characters");
  c_purge->add_flag("--all", cp_all, "every stored response of the route");
  c_purge->callback([&] {
    if (cp_all == !cp_path.empty()) die(2, "cache purge: give --path or --all");
    json b = {{"route", cp_route}};
    if (cp_all)
      b["all"] = true;
    else
      b["path"] = cp_path;
    json r = check(call("POST", "/v1/cache/purge", &b)).body;
    if (g.as_json) return print(r);
    std::cout << "purged " << r.value("pattern", "") << " on route " << r.value("route", "")
              << " (responses stored before now)\n";
  });
  auto* c_stats = cache->add_subcommand("stats", "what the cache holds and did, for a route or all");
  std::string cs_route;
  c_stats->add_option("route", cs_route, "the route (default: all)");
  c_stats->callback([&] {
    json r = check(call("GET", "/v1/cache/stats" + (cs_route.empty() ? "" : "?route=" + url_escape(cs_route)))).body;
    if (g.as_json) return print(r);
    for (const auto& p : r["pxd"]) {
      std::cout << "cache " << p.value("dir", "") << ": " << p.value("objects", 0) << " objects, "
                << p.value("bytes", 0) << " of " << p.value("max_bytes", 0) << " bytes; stored " << p.value("stored", 0)
                << ", evicted " << p.value("evictions", 0) << ", coalesced " << p.value("coalesced", 0) << ", errors "
                << p.value("errors", 0) << "\n";
      std::vector<std::vector<std::string>> rows;
      auto row = [&](const std::string& name, const json& c) {
        std::vector<std::string> v = {name};
        for (const char* k : {"hit", "stale", "revalidated", "miss", "bypass", "refresh", "served_bytes"})
          v.push_back(std::to_string(c.value(k, 0)));
        rows.push_back(v);
      };
      if (p.contains("route"))
        row(p["route"].get<std::string>(), p["requests"]);
      else
        for (auto it = p["routes"].begin(); it != p["routes"].end(); ++it) row(it.key(), it.value());
      table({"ROUTE", "HIT", "STALE", "REVALIDATED", "MISS", "BYPASS", "REFRESH", "SERVED_BYTES"}, rows);
    }
  });

  auto* comp = app.add_subcommand("completion", "print a shell completion script");
  std::string shell;
  comp->add_option("shell", shell)->required()->check(CLI::IsMember({"bash"}));
  comp->callback([&] { std::cout << kCompletion; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return 0;
}
