#include "admin/server.h"

#include <arpa/inet.h>
#include <uv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "admin/api.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/parser.h"

namespace px::admin {

namespace {

constexpr size_t kMaxBody = 64 * 1024 * 1024;

struct Srv {
  uv_loop_t* loop;
  store::Store store;
  Admin* admin;
  http::Limits limits;
  uv_pipe_t unix_listener;
  uv_tcp_t tcp_listener;
  bool has_tcp = false;
  std::set<struct Conn*> conns;
};

struct Conn final : http::Sink {
  union {
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } h;
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

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&h); }

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

void send(Conn* c, int status, const json& body, uint64_t version, const char* extra_headers = "") {
  std::string text = body.is_null() ? std::string() : body.dump(2) + "\n";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + http::reason_phrase(status) +
                    "\r\nServer: pxadmind\r\nCache-Control: no-store\r\n";
  if (!text.empty()) out += "Content-Type: application/json\r\n";
  if (version) out += "ETag: \"" + std::to_string(version) + "\"\r\n";
  out += extra_headers;
  out += "Content-Length: " + std::to_string(text.size()) + "\r\n";
  if (!c->keep_alive) out += "Connection: close\r\n";
  out += "\r\n";
  if (status != 204 && status != 304) out += text;
  struct W {
    uv_write_t req;
    std::string data;
  };
  auto* w = new W{{}, std::move(out)};
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  if (uv_write(&w->req, c->stream(), &b, 1, [](uv_write_t* r, int) { delete static_cast<W*>(r->data); }) != 0)
    delete w;
}

void close_conn(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->srv->conns.erase(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->h), [](uv_handle_t* hd) { delete static_cast<Conn*>(hd->data); });
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
    if (auth.size() > 7 && iequals(auth.substr(0, 7), "bearer ")) name = c->srv->admin->verify_token(std::string(trim(auth.substr(7))));
    if (name.empty()) {
      Result r = Result::error(401, "Authorization", auth.empty() ? "a bearer token is required" : "invalid token");
      send(c, 401, r.body, 0, "WWW-Authenticate: Bearer realm=\"pxadmind\"\r\n");
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
    if (!(req.method == "POST" && (target.rfind("/v1/tokens", 0) == 0))) {
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
  if (r.status >= 500) PX_ERR("%s %s: %s", req.method.c_str(), target.c_str(), r.body.dump().c_str());
  else if (req.method != "GET") PX_INFO("%s %s %s -> %d", req.who.c_str(), req.method.c_str(), target.c_str(), r.status);
  send(c, r.status, r.body, r.version);
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  if (n < 0) {
    free(buf->base);
    close_conn(c);
    return;
  }
  c->leftover.append(buf->base, static_cast<size_t>(n));
  free(buf->base);
  while (!c->closing && !c->leftover.empty()) {
    llhttp_errno_t e = c->parser.execute(c->leftover.data(), c->leftover.size());
    if (e == HPE_PAUSED) {
      size_t used = static_cast<size_t>(c->parser.error_pos() - c->leftover.data());
      c->leftover.erase(0, used);
      handle(c);
      c->body.clear();
      c->too_big = false;
      if (!c->keep_alive) {
        uv_read_stop(s);
        uv_shutdown_t* sh = new uv_shutdown_t;
        sh->data = c;
        if (uv_shutdown(sh, s, [](uv_shutdown_t* r, int) {
              close_conn(static_cast<Conn*>(r->data));
              delete r;
            }) != 0) {
          delete sh;
          close_conn(c);
        }
        return;
      }
      c->parser.resume();
      continue;
    }
    if (e != HPE_OK) {
      c->keep_alive = false;
      send(c, c->parser.error_status(), Result::error(c->parser.error_status(), "", c->parser.error_reason()).body, 0);
      uv_read_stop(s);
      close_conn(c);
      return;
    }
    c->leftover.clear();
    break;
  }
}

void start_conn(Conn* c) {
  c->srv->conns.insert(c);
  c->h.pipe.data = c;
  c->parser.init(HTTP_REQUEST, c, &c->srv->limits);
  c->parser.attach(&c->head);
  uv_read_start(c->stream(), [](uv_handle_t*, size_t sz, uv_buf_t* b) { *b = uv_buf_init(static_cast<char*>(malloc(sz)), static_cast<unsigned>(sz)); }, on_read);
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
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&srv.unix_listener), 128, [](uv_stream_t* l, int st) {
    if (st != 0) return;
    Srv* s = static_cast<Srv*>(l->data);
    auto* c = new Conn();
    c->srv = s;
    c->is_unix = true;
    uv_pipe_init(s->loop, &c->h.pipe, 0);
    c->h.pipe.data = c;
    if (uv_accept(l, c->stream()) != 0) {
      close_conn(c);
      return;
    }
    uv_os_fd_t fd;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->h), &fd) == 0 &&
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
    std::string hostport = opt.tcp_listen;
    size_t colon = hostport.rfind(':');
    std::string host = hostport.substr(0, colon);
    if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
    int port = colon == std::string::npos ? 0 : std::atoi(hostport.c_str() + colon + 1);
    sockaddr_storage ss{};
    if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
        uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      PX_ERR("--listen %s: expected a numeric ADDRESS:PORT", opt.tcp_listen.c_str());
      return 2;
    }
    uv_tcp_init(&loop, &srv.tcp_listener);
    srv.tcp_listener.data = &srv;
    r = uv_tcp_bind(&srv.tcp_listener, reinterpret_cast<sockaddr*>(&ss), 0);
    if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&srv.tcp_listener), 128, [](uv_stream_t* l, int st) {
      if (st != 0) return;
      Srv* s = static_cast<Srv*>(l->data);
      auto* c = new Conn();
      c->srv = s;
      c->is_unix = false;
      uv_tcp_init(s->loop, &c->h.tcp);
      c->h.tcp.data = c;
      if (uv_accept(l, c->stream()) != 0) {
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
  uv_signal_t sigterm, sigint;
  uv_signal_init(&loop, &sigterm);
  uv_signal_init(&loop, &sigint);
  auto stop = [](uv_signal_t* s, int) { uv_stop(s->loop); };
  uv_signal_start(&sigterm, stop, SIGTERM);
  uv_signal_start(&sigint, stop, SIGINT);
  PX_INFO("pxadmind ready: store %s", opt.data_dir.c_str());
  uv_run(&loop, UV_RUN_DEFAULT);
  ::unlink(opt.socket_path.c_str());
  while (!srv.conns.empty()) close_conn(*srv.conns.begin());
  uv_walk(&loop, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }, nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  PX_INFO("pxadmind stopped");
  return 0;
}

}  // namespace px::admin
