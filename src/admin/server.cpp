#include "admin/server.h"

#include <openssl/mem.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstring>

#include "admin/api.h"
#include "admin/metrics.h"
#include "admin/ui_auth.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/strings.h"
#include "http/parser.h"
#include "http/server.h"
#include "net/uv_transport.h"

namespace px::admin {

namespace {

constexpr size_t kMaxBody = 64 * 1024 * 1024;

enum Listener { kUnix, kApi, kUi };

struct Srv {
  AdminMetrics metrics;
  store::Store store;
  Admin* admin;
  std::string ui_dir;  // the dashboard's assets
};

// One request, as the handler sees it, and the answer it makes.
struct Ask {
  Srv* srv;
  const http::Head& head;
  const std::string& body;
  bool too_big;
  bool is_unix;
  bool ui;                  // the dashboard's listener: its assets, and session cookies for the API
  const std::string& peer;  // TCP: the client's address; unix: "uid:N"
  bool keep_alive = true;
  http::Reply reply;
};

using Fields = std::vector<std::pair<std::string, std::string>>;

// What every dashboard answer carries: no script but its own, never framed, no referrer.
constexpr const char* kUiPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

void send_raw(Ask* c, int status, std::string_view type, std::string_view body, const Fields& extra,
              const char* cache = "no-store") {
  http::Reply& r = c->reply;
  r.status = status;
  r.content_type = std::string(type);
  r.cache_control = cache;
  if (c->ui) {
    r.fields = {{"Content-Security-Policy", kUiPolicy},
                {"X-Content-Type-Options", "nosniff"},
                {"X-Frame-Options", "DENY"},
                {"Referrer-Policy", "no-referrer"}};
  }
  r.fields.insert(r.fields.end(), extra.begin(), extra.end());
  r.body = std::string(body);
  r.close = !c->keep_alive;
  c->srv->metrics.api_request(c->head.method_name(), status);
}

void send(Ask* c, int status, const json& body, uint64_t version, Fields extra = {}) {
  std::string text = body.is_null() ? std::string() : body.dump(2) + "\n";
  if (version) extra.emplace_back("ETag", "\"" + std::to_string(version) + "\"");
  send_raw(c, status, text.empty() ? "" : "application/json", text, extra);
}

// The dashboard's files: "/" and "/ui/" are its page; "/ui/NAME" one asset of the folder (one level,
// plain names only). Revalidated each time (ETag), so an upgrade's assets show at once.
void serve_asset(Ask* c, const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  if (c->head.method != http::Method::get && c->head.method != http::Method::head) {
    send_raw(c, 405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "GET, HEAD"}});
    return;
  }
  if (path == "/" || path == "/ui") {
    send_raw(c, 302, "", "", {{"Location", "/ui/"}});
    return;
  }
  std::string name = path == "/ui/" ? "index.html" : path.rfind("/ui/", 0) == 0 ? path.substr(4) : "";
  bool plain = !name.empty() && name[0] != '.' && name.size() < 64;
  for (char ch : name)
    plain = plain && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_');
  std::string data;
  if (plain) {
    FILE* f = fopen((c->srv->ui_dir + "/" + name).c_str(), "rb");
    if (f) {
      char buf[16384];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
      fclose(f);
    } else {
      plain = false;
    }
  }
  if (!plain) {
    send_raw(c, 404, "text/plain; charset=utf-8", "not found\n", {});
    return;
  }
  static const std::pair<const char*, const char*> kTypes[] = {{".html", "text/html; charset=utf-8"},
                                                               {".js", "text/javascript; charset=utf-8"},
                                                               {".css", "text/css; charset=utf-8"},
                                                               {".svg", "image/svg+xml"},
                                                               {".png", "image/png"},
                                                               {".ico", "image/x-icon"}};
  const char* type = "application/octet-stream";
  for (const auto& [ext, t] : kTypes)
    if (name.size() > strlen(ext) && name.compare(name.size() - strlen(ext), strlen(ext), ext) == 0) type = t;
  std::string etag = "\"" + sha256_hex(data).substr(0, 16) + "\"";
  if (trim(c->head.get("if-none-match")) == etag) {
    send_raw(c, 304, "", "", {{"ETag", etag}}, "no-cache");
    return;
  }
  send_raw(c, 200, type, data, {{"ETag", etag}}, "no-cache");
}

// A cookie's value from the Cookie header ("" when absent).
std::string cookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view part = trim(header.substr(0, semi));
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
  }
  return "";
}

void handle(Ask* c) {
  const http::Head& hd = c->head;
  c->keep_alive = hd.keep_alive;
  Request req;
  req.method = std::string(hd.method_name());
  if (!c->is_unix) req.ip = c->peer;
  std::string target(hd.url());
  if (c->ui && target.rfind("/v1/", 0) != 0) {
    serve_asset(c, target);
    return;
  }
  std::string path = target.substr(0, target.find('?'));
  bool changes = req.method != "GET" && req.method != "HEAD";
  bool by_cookie = false, read_only = false;
  UiSession* sess = nullptr;
  // Authentication: the unix socket's peer uid, a bearer token on TCP, or (the dashboard's listener)
  // a session cookie.
  std::string_view auth = c->is_unix ? std::string_view() : hd.get("authorization");
  if (c->is_unix) {
    req.who = c->peer;
  } else if (path != "/v1/openapi.json") {
    std::string name;
    if (auth.size() > 7 && iequals(auth.substr(0, 7), "bearer "))
      name = c->srv->admin->verify_token(std::string(trim(auth.substr(7))));
    if (!name.empty()) {
      req.who = "token:" + name;
    } else if (c->ui && auth.empty()) {
      req.session = cookie(hd.get("cookie"), "px_session");
      sess = g_ui ? g_ui->find(req.session) : nullptr;
      bool open = (path == "/v1/session" && req.method != "DELETE") || path == "/v1/session/setup";
      if (sess) {
        req.who = "user:" + sess->user;
        by_cookie = true;
        read_only = sess->role != "admin";
      } else if (open) {
        req.who = "anonymous";
      } else {
        send(c, 401, Result::error(401, "", "log in first (the session ended, or there is none)").body, 0);
        return;
      }
    } else {
      Result r = Result::error(401, "Authorization", auth.empty() ? "a bearer token is required" : "invalid token");
      send(c, 401, r.body, 0, {{"WWW-Authenticate", "Bearer realm=\"pxadmind\""}});
      return;
    }
  }
  // The dashboard's listener: a change must come from the dashboard's own pages. Browsers send
  // Origin on these requests; another site's form or script is refused before anything happens, and
  // a session's change must also carry the session's CSRF token (which only its pages can read).
  if (c->ui && changes && !req.who.starts_with("token:")) {
    std::string_view origin = hd.get("origin"), host = hd.get("host");
    bool same =
        origin.empty() ||
        (host.size() > 0 && (origin == "http://" + std::string(host) || origin == "https://" + std::string(host)));
    if (!same || hd.get("sec-fetch-site") == "cross-site") {
      send(c, 403, Result::error(403, "Origin", "a cross-origin request cannot change anything here").body, 0);
      return;
    }
    if (by_cookie) {
      std::string_view token = trim(hd.get("x-csrf-token"));
      if (token.size() != sess->csrf.size() || CRYPTO_memcmp(token.data(), sess->csrf.data(), token.size()) != 0) {
        send(c, 403, Result::error(403, "X-CSRF-Token", "missing or wrong: reload the page").body, 0);
        return;
      }
    }
  }
  if (read_only && changes && path.rfind("/v1/session", 0) != 0) {
    send(c, 403, Result::error(403, "", "viewer accounts can only read").body, 0);
    return;
  }
  if (read_only && path == "/v1/config" && target.find("include_keys") != std::string::npos) {
    send(c, 403, Result::error(403, "include_keys", "private keys are for admins").body, 0);
    return;
  }
  if (c->too_big) {
    send(c, 413, Result::error(413, "", "request body over 64 MiB").body, 0);
    c->keep_alive = false;
    return;
  }
  int status = 404;
  const Operation* op = match(req.method, target, &req, &status);
  if (!op) {
    send(c, status, Result::error(status, "", status == 404 ? "no such API path" : "method not allowed here").body, 0);
    return;
  }
  if (!c->body.empty()) {
    req.body = json::parse(c->body, nullptr, false);
    if (req.body.is_discarded()) {
      send(c, 400, Result::error(400, "body", "not valid JSON").body, 0);
      return;
    }
  } else if (req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
    if (!(req.method == "POST" &&
          (target.rfind("/v1/tokens", 0) == 0 || target == "/v1/traces" || path == "/v1/session/totp"))) {
      send(c, 400, Result::error(400, "body", "a JSON body is required").body, 0);
      return;
    }
    req.body = json::object();
  }
  std::string_view im = trim(hd.get("if-match"));
  if (!im.empty() && im != "*") {
    if (im.substr(0, 2) == "W/") im.remove_prefix(2);
    if (im.size() >= 2 && im.front() == '"' && im.back() == '"') im = im.substr(1, im.size() - 2);
    if (!parse_u64(im, &req.if_match) || req.if_match == 0) {
      send(c, 400, Result::error(400, "If-Match", "expected a version such as \"3\"").body, 0);
      return;
    }
  }
  Result r = op->handler(*c->srv->admin, req);
  if (r.status >= 500)
    PX_ERR("%s %s: %s", req.method.c_str(), target.c_str(), r.body.dump().c_str());
  else if (req.method != "GET")
    PX_INFO("%s %s %s -> %d", req.who.c_str(), req.method.c_str(), target.c_str(), r.status);
  Fields extra;
  if (!r.set_cookie.empty()) {
    bool tls = iequals(hd.get("x-forwarded-proto"), "https");  // behind a px TLS route
    std::string v = "px_session=" + (r.set_cookie == "-" ? std::string() : r.set_cookie) +
                    "; Path=/; HttpOnly; SameSite=Strict" + (tls ? "; Secure" : "") +
                    (r.set_cookie == "-" ? "; Max-Age=0" : "");
    extra.emplace_back("Set-Cookie", v);
  }
  if (r.status == 429 && r.body.contains("retry_after"))
    extra.emplace_back("Retry-After", std::to_string(r.body["retry_after"].get<int64_t>()));
  send(c, r.status, r.body, r.version, std::move(extra));
}

// ADDRESS:PORT ([v6]:port) with a numeric address.
bool parse_addr(const std::string& hostport, sockaddr_storage* ss) {
  size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = hostport.substr(0, colon);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  uint64_t port = 0;
  if (!parse_u64(std::string_view(hostport).substr(colon + 1), &port) || port > 65535) return false;
  *ss = {};
  int p = static_cast<int>(port);
  return uv_ip4_addr(host.c_str(), p, reinterpret_cast<sockaddr_in*>(ss)) == 0 ||
         uv_ip6_addr(host.c_str(), p, reinterpret_cast<sockaddr_in6*>(ss)) == 0;
}

// A TCP listener for the API (bearer tokens), or for the dashboard (its pages, and the API with
// session cookies too). 0, or the exit code with the reason logged.
int listen_tcp(http::Server& server, Listener tag, const std::string& addr, const char* option, const char* what) {
  sockaddr_storage ss{};
  if (!parse_addr(addr, &ss)) {
    PX_ERR("%s %s: expected a numeric ADDRESS:PORT", option, addr.c_str());
    return 2;
  }
  if (int r = server.listen_tcp(reinterpret_cast<sockaddr*>(&ss), tag)) {
    PX_ERR("%s %s: %s", option, addr.c_str(), uv_strerror(r));
    return 1;
  }
  char ip[64];
  bool v6 = ss.ss_family == AF_INET6;
  if (v6)
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), ip, sizeof ip);
  else
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), ip, sizeof ip);
  int port = server.port(tag);
  if (tag == kUi)
    PX_INFO("dashboard on http://%s:%d/ui/", v6 ? ("[" + std::string(ip) + "]").c_str() : ip, port);
  else
    PX_INFO("listening on tcp:%s:%d (%s)", ip, port, what);
  return 0;
}

}  // namespace

int run_server(const ServerOptions& opt) {
  Srv srv;
  std::string err;
  if (!srv.store.open(opt.data_dir, false, &err)) {
    PX_ERR("%s", err.c_str());
    return 1;
  }
  Admin admin(srv.store);
  srv.admin = &admin;
  std::unique_ptr<fleet::Fleet> fleet;
  if (!opt.fleet.etcd.endpoints.empty()) {
    // Set before start(): the follower's thread reads them.
    fleet = std::make_unique<fleet::Fleet>(opt.fleet);
    admin.set_fleet([f = fleet.get()] { return f->status(); }, [f = fleet.get()] { return f->hosts(); });
    fleet->set_host_facts([&admin, files = opt.pxd_status_files] {
      json s = admin.status(files).body;
      json pxd = json::array();
      for (const json& p : s.value("pxd", json::array()))
        pxd.push_back({{"running", p.value("running", false)},
                       {"generation", p.value("generation", uint64_t(0))},
                       {"in_sync", p.value("in_sync", false)},
                       {"route_errors", p.value("route_errors", json::object())},
                       {"stream_errors", p.value("stream_errors", json::object())}});
      return json{{"generation", s.value("generation", uint64_t(0))}, {"pxd", pxd}};
    });
    if (!fleet->start(&srv.store, &err)) {
      PX_ERR("fleet %s: %s", opt.fleet.name.c_str(), err.c_str());
      return 2;
    }
  }
  g_pxd_status_files = opt.pxd_status_files;
  uv_loop_t loop;
  uv_loop_init(&loop);

  http::Server::Options so;
  so.limits.max_head = 64 * 1024;
  so.limits.max_headers = 100;
  so.limits.max_uri = 8 * 1024;
  so.max_body = kMaxBody;
  so.name = "pxadmind";
  so.refused = [&srv](int status, std::string_view reason) {
    http::Reply r;
    r.status = status;
    r.content_type = "application/json";
    r.body = Result::error(status, "", std::string(reason)).body.dump(2) + "\n";
    srv.metrics.api_request("", status);
    return r;
  };
  http::Server server(
      &loop,
      [&srv](const http::ServerRequest& rq) {
        Ask c{&srv, rq.head, rq.body, rq.body_too_large, rq.unix_socket, rq.listener == kUi, rq.peer, true, {}};
        handle(&c);
        return std::move(c.reply);
      },
      so);
  // The unix socket: its directory is made if missing; a stale socket file is replaced.
  std::string dir = opt.socket_path.substr(0, opt.socket_path.rfind('/'));
  if (!dir.empty()) ::mkdir(dir.c_str(), 0755);
  if (int r = server.listen_unix(opt.socket_path, opt.socket_mode, kUnix)) {
    PX_ERR("unix socket %s: %s", opt.socket_path.c_str(), uv_strerror(r));
    return 1;
  }
  PX_INFO("listening on unix:%s", opt.socket_path.c_str());
  if (!opt.tcp_listen.empty()) {
    if (int e = listen_tcp(server, kApi, opt.tcp_listen, "--listen", "bearer tokens required")) return e;
  }
  UiAuth ui(admin, opt.ui);
  if (!opt.ui_listen.empty()) {
    srv.ui_dir = opt.ui_dir;
    FILE* f = fopen((srv.ui_dir + "/index.html").c_str(), "rb");
    if (!f) {
      PX_ERR("--ui-assets %s: no index.html there (the dashboard's files)", srv.ui_dir.c_str());
      return 2;
    }
    fclose(f);
    g_ui = &ui;
    ui.start();
    if (int e = listen_tcp(server, kUi, opt.ui_listen, "--ui", "the dashboard, at /ui/")) return e;
  }
  std::unique_ptr<http::Server> metrics;
  if (!opt.metrics_listen.empty()) {
    sockaddr_storage ss{};
    if (!parse_addr(opt.metrics_listen, &ss)) {
      PX_ERR("--metrics %s: expected a numeric ADDRESS:PORT", opt.metrics_listen.c_str());
      return 2;
    }
    metrics = std::make_unique<http::Server>(
        &loop, http::metrics_handler([&srv, &opt] { return srv.metrics.text(*srv.admin, opt.pxd_status_files); }),
        http::Server::Options{});
    if (int e = metrics->listen_tcp(reinterpret_cast<sockaddr*>(&ss))) {
      PX_ERR("--metrics %s: %s", opt.metrics_listen.c_str(), uv_strerror(e));
      return 1;
    }
    PX_INFO("metrics on http://%s/metrics (port %d)", opt.metrics_listen.c_str(), metrics->port());
  }
  AcmeOptions acme = opt.acme;
  acme.pxd_status_files = opt.pxd_status_files;
  if (fleet) {
    acme.lock = [f = fleet.get()](const std::string& name, std::string* holder) { return f->lock_acme(name, holder); };
    acme.unlock = [f = fleet.get()](const std::string& name) { f->unlock_acme(name); };
    acme.fleet_serves = [f = fleet.get()] { return f->all_serve(); };
  }
  acme.on_order = [&srv](bool issued, const std::string& type) { srv.metrics.acme_order(issued, type); };
  admin.set_dns_hook(!acme.dns_hook.empty());
  AcmeManager acme_manager(&loop, admin, acme);
  if (!acme_manager.start(&err)) {
    PX_ERR("%s", err.c_str());
    return 2;
  }
  uv_signal_t sigterm, sigint;
  uv_signal_init(&loop, &sigterm);
  uv_signal_init(&loop, &sigint);
  auto stop = [](uv_signal_t* s, int) {
    notify::send("STOPPING=1");
    uv_stop(s->loop);
  };
  uv_signal_start(&sigterm, stop, SIGTERM);
  uv_signal_start(&sigint, stop, SIGINT);
  PX_INFO("pxadmind ready: store %s", opt.data_dir.c_str());
  notify::send("READY=1\nMAINPID=" + std::to_string(getpid()) + "\nSTATUS=serving the API on " + opt.socket_path);
  uv_timer_t watchdog;
  uv_timer_init(&loop, &watchdog);
  if (uint64_t us = notify::watchdog_usec()) {
    uint64_t every = std::max<uint64_t>(us / 2000, 1);
    uv_timer_start(
        &watchdog, [](uv_timer_t*) { notify::send("WATCHDOG=1"); }, every, every);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  acme_manager.stop();
  if (metrics) metrics->close();
  ::unlink(opt.socket_path.c_str());
  server.close();
  net::close_all_handles(&loop);
  uv_loop_close(&loop);
  if (fleet) fleet->stop();
  g_ui = nullptr;
  PX_INFO("pxadmind stopped");
  return 0;
}

}  // namespace px::admin
