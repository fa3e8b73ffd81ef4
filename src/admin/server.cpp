#include "admin/server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "admin/api.h"
#include "admin/metrics.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/strings.h"
#include "http/h1.h"
#include "http/parser.h"
#include "http/side_server.h"
#include "net/uv_transport.h"

namespace px::admin {

namespace {

constexpr size_t kMaxBody = 64 * 1024 * 1024;

struct Srv {
  uv_loop_t* loop;
  AdminMetrics metrics;
  store::Store store;
  Admin* admin;
  http::Limits limits;
  uv_pipe_t unix_listener;
  uv_tcp_t tcp_listener;
  bool has_tcp = false;
  std::set<struct Conn*> conns;
};

struct Conn final : http::Sink, net::TransportUser {
  // A unix socket or a TCP connection (pxadmind is not on the request path: one more allocation is fine).
  std::unique_ptr<net::Transport> owned;
  net::Transport& t() { return *owned; }
  Srv* srv;
  bool is_unix;
  std::string who;  // unix: "uid:N"
  http::Parser parser;
  http::Head head;
  std::string body;
  std::string leftover;
  bool too_big = false;
  bool closing = false;
  bool keep_alive = true;

  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int) override { on_eof(); }
  void on_drained() override {}
  void on_closed() override {
    srv->conns.erase(this);
    delete this;
  }

  int on_head(http::Head& hd) override {
    if (hd.has_content_length && hd.content_length > kMaxBody) too_big = true;
    return 0;
  }
  int on_body(const char* d, size_t n) override {
    if (body.size() + n > kMaxBody) {
      too_big = true;
      return 0;
    }
    body.append(d, n);
    return 0;
  }
  int on_complete() override { return HPE_PAUSED; }
};

void send(Conn* c, int status, const json& body, uint64_t version, std::string_view extra_name = {},
          std::string_view extra_value = {}) {
  std::string text = body.is_null() ? std::string() : body.dump(2) + "\n";
  net::Output o;
  std::string& out = o.begin_scratch();
  http::HeadWriter w(out);
  w.status_line(status);
  w.field("Server", "pxadmind");
  w.field("Cache-Control", "no-store");
  if (!text.empty()) w.field("Content-Type", "application/json");
  if (version) w.field("ETag", "\"" + std::to_string(version) + "\"");
  if (!extra_name.empty()) w.field(extra_name, extra_value);
  w.end_response(http::Framing::length, text.size(), false, !c->keep_alive, false);
  if (status != 204 && status != 304) out += text;
  o.end_scratch();
  c->t().write(o);
  c->srv->metrics.api_request(c->head.method_name(), status);
}

void close_conn(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->t().close();
}

void handle(Conn* c) {
  const http::Head& hd = c->head;
  c->keep_alive = hd.keep_alive;
  Request req;
  req.method = std::string(hd.method_name());
  std::string target(hd.url());
  // Authentication: the unix socket's peer uid, or a bearer token on TCP.
  if (c->is_unix) {
    req.who = c->who;
  } else if (target.rfind("/v1/openapi.json", 0) != 0) {
    std::string_view auth = hd.get("authorization");
    std::string name;
    if (auth.size() > 7 && iequals(auth.substr(0, 7), "bearer "))
      name = c->srv->admin->verify_token(std::string(trim(auth.substr(7))));
    if (name.empty()) {
      Result r = Result::error(401, "Authorization", auth.empty() ? "a bearer token is required" : "invalid token");
      send(c, 401, r.body, 0, "WWW-Authenticate", "Bearer realm=\"pxadmind\"");
      return;
    }
    req.who = "token:" + name;
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
    if (!(req.method == "POST" && (target.rfind("/v1/tokens", 0) == 0 || target == "/v1/traces"))) {
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
  send(c, r.status, r.body, r.version);
}

void Conn::on_eof() { close_conn(this); }

void Conn::on_data(const char* data, size_t n) {
  Conn* c = this;
  c->leftover.append(data, n);
  while (!c->closing && !c->leftover.empty()) {
    llhttp_errno_t e = c->parser.execute(c->leftover.data(), c->leftover.size());
    if (e == HPE_PAUSED) {
      size_t used = static_cast<size_t>(c->parser.error_pos() - c->leftover.data());
      c->leftover.erase(0, used);
      handle(c);
      c->body.clear();
      c->too_big = false;
      if (!c->keep_alive) {
        // Close once the answer is out.
        c->closing = true;
        c->t().read_stop();
        c->t().shutdown(true);
        return;
      }
      c->parser.resume();
      continue;
    }
    if (e != HPE_OK) {
      c->keep_alive = false;
      send(c, c->parser.error_status(), Result::error(c->parser.error_status(), "", c->parser.error_reason()).body, 0);
      c->closing = true;
      c->t().read_stop();
      c->t().shutdown(true);
      return;
    }
    c->leftover.clear();
    break;
  }
}

void start_conn(Conn* c) {
  c->parser.init(HTTP_REQUEST, c, &c->srv->limits);
  c->parser.attach(&c->head);
  c->t().read_start();
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
  srv.limits.max_head = 64 * 1024;
  srv.limits.max_headers = 100;
  srv.limits.max_uri = 8 * 1024;
  g_pxd_status_files = opt.pxd_status_files;
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv.loop = &loop;

  // The unix socket: its directory is made if missing; a stale socket file is replaced.
  std::string dir = opt.socket_path.substr(0, opt.socket_path.rfind('/'));
  if (!dir.empty()) ::mkdir(dir.c_str(), 0755);
  ::unlink(opt.socket_path.c_str());
  uv_pipe_init(&loop, &srv.unix_listener, 0);
  srv.unix_listener.data = &srv;
  int r = uv_pipe_bind(&srv.unix_listener, opt.socket_path.c_str());
  if (r == 0) r = ::chmod(opt.socket_path.c_str(), static_cast<mode_t>(opt.socket_mode)) == 0 ? 0 : -errno;
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(&srv.unix_listener), 128, [](uv_stream_t* l, int st) {
      if (st != 0) return;
      Srv* s = static_cast<Srv*>(l->data);
      auto* c = new Conn();
      c->srv = s;
      c->is_unix = true;
      s->conns.insert(c);
      auto* pipe = new net::UvPipeTransport();
      c->owned.reset(pipe);
      pipe->init(s->loop);
      pipe->set_user(c);
      if (pipe->accept(l) != 0) {
        close_conn(c);
        return;
      }
      uv_os_fd_t fd;
      ucred cred{};
      socklen_t len = sizeof cred;
      if (uv_fileno(reinterpret_cast<uv_handle_t*>(pipe->stream()), &fd) == 0 &&
          getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        c->who = "uid:" + std::to_string(cred.uid);
      else
        c->who = "uid:?";
      start_conn(c);
    });
  if (r != 0) {
    PX_ERR("unix socket %s: %s", opt.socket_path.c_str(), r < -1000 ? strerror(-r) : uv_strerror(r));
    return 1;
  }
  PX_INFO("listening on unix:%s", opt.socket_path.c_str());
  if (!opt.tcp_listen.empty()) {
    sockaddr_storage ss{};
    if (!parse_addr(opt.tcp_listen, &ss)) {
      PX_ERR("--listen %s: expected a numeric ADDRESS:PORT", opt.tcp_listen.c_str());
      return 2;
    }
    uv_tcp_init(&loop, &srv.tcp_listener);
    srv.tcp_listener.data = &srv;
    r = uv_tcp_bind(&srv.tcp_listener, reinterpret_cast<sockaddr*>(&ss), 0);
    if (r == 0)
      r = uv_listen(reinterpret_cast<uv_stream_t*>(&srv.tcp_listener), 128, [](uv_stream_t* l, int st) {
        if (st != 0) return;
        Srv* s = static_cast<Srv*>(l->data);
        auto* c = new Conn();
        c->srv = s;
        c->is_unix = false;
        s->conns.insert(c);
        auto* tcp = new net::UvTransport();
        c->owned.reset(tcp);
        tcp->init(s->loop);
        tcp->set_user(c);
        if (tcp->accept(l) != 0) {
          close_conn(c);
          return;
        }
        start_conn(c);
      });
    if (r != 0) {
      PX_ERR("--listen %s: %s", opt.tcp_listen.c_str(), uv_strerror(r));
      return 1;
    }
    sockaddr_storage actual{};
    int alen = sizeof actual;
    uv_tcp_getsockname(&srv.tcp_listener, reinterpret_cast<sockaddr*>(&actual), &alen);
    char ip[64];
    int aport;
    if (actual.ss_family == AF_INET6) {
      uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&actual), ip, sizeof ip);
      aport = ntohs(reinterpret_cast<sockaddr_in6*>(&actual)->sin6_port);
    } else {
      uv_ip4_name(reinterpret_cast<sockaddr_in*>(&actual), ip, sizeof ip);
      aport = ntohs(reinterpret_cast<sockaddr_in*>(&actual)->sin_port);
    }
    PX_INFO("listening on tcp:%s:%d (bearer tokens required)", ip, aport);
    srv.has_tcp = true;
  }
  std::unique_ptr<http::SideServer> metrics;
  if (!opt.metrics_listen.empty()) {
    sockaddr_storage ss{};
    if (!parse_addr(opt.metrics_listen, &ss)) {
      PX_ERR("--metrics %s: expected a numeric ADDRESS:PORT", opt.metrics_listen.c_str());
      return 2;
    }
    metrics = std::make_unique<http::SideServer>(
        &loop, http::SideServer::metrics([&srv, &opt] { return srv.metrics.text(*srv.admin, opt.pxd_status_files); }));
    if (int e = metrics->open_addr(reinterpret_cast<sockaddr*>(&ss))) {
      PX_ERR("--metrics %s: %s", opt.metrics_listen.c_str(), uv_strerror(e));
      return 1;
    }
    PX_INFO("metrics on http://%s/metrics (port %d)", opt.metrics_listen.c_str(), metrics->port());
  }
  AcmeOptions acme = opt.acme;
  acme.pxd_status_files = opt.pxd_status_files;
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
  for (Conn* c : std::set<Conn*>(srv.conns)) close_conn(c);
  uv_walk(
      &loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  PX_INFO("pxadmind stopped");
  return 0;
}

}  // namespace px::admin
