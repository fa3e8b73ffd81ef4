#include "http/server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "http/h1.h"
#include "http/server_conn.h"
#include "net/uv_transport.h"

namespace px::http {

struct Server::Listener {
  Server* srv;
  int tag;
  bool unix_socket;
  uv_tcp_t tcp{};
  uv_pipe_t pipe{};
  uv_handle_t* handle() {
    return unix_socket ? reinterpret_cast<uv_handle_t*>(&pipe) : reinterpret_cast<uv_handle_t*>(&tcp);
  }
};

// A connection: an http::ServerConn (server_conn.h), as pxd's client connections are.
struct Server::Conn final : Sink, net::TransportUser, ServerConn {
  Server* srv;
  Listener* from;
  std::string peer;
  Parser parser;
  Head head;
  std::string body;
  bool too_large = false;
  bool closing = false;

  int on_head(Head& h) override {
    bool has_body = (h.has_content_length && h.content_length > 0) || h.chunked;
    if (has_body && srv->opt_.max_body == 0) return parser.set_error(413, "a request body is not accepted here");
    if (h.has_content_length && h.content_length > srv->opt_.max_body) too_large = true;
    return 0;
  }
  int on_body(const char* d, size_t n) override {
    if (too_large || body.size() + n > srv->opt_.max_body) {
      too_large = true;
      body.clear();
      return 0;
    }
    body.append(d, n);
    return 0;
  }
  int on_complete() override { return kPause; }

  void answer(const Reply& r, bool keep) {
    net::Output o;
    std::string& out = o.begin_scratch();
    HeadWriter w(out);
    w.status_line(r.status);
    if (!srv->opt_.name.empty()) w.field("Server", srv->opt_.name);
    if (!r.cache_control.empty()) w.field("Cache-Control", r.cache_control);
    if (!r.content_type.empty()) w.field("Content-Type", r.content_type);
    for (const auto& [k, v] : r.fields) w.field(k, v);
    w.end_response(Framing::length, r.body.size(), false, !keep, false);
    if (r.status != 204 && r.status != 304 && head.method != Method::head) out += r.body;
    o.end_scratch();
    tr->write(o);
    if (!keep) finish();
  }
  // Close once the answer is out.
  void finish() {
    if (closing) return;
    closing = true;
    tr->read_stop();
    tr->shutdown(true);
  }
  void on_data(const char* data, size_t len) override {
    leftover.append(data, len);
    while (!closing && !leftover.empty()) {
      Parsed e = parser.execute(leftover.data(), leftover.size());
      if (e == Parsed::paused) {
        leftover.erase_front(static_cast<size_t>(parser.error_pos() - leftover.data()));
        ServerRequest rq{head, body, too_large, from->tag, from->unix_socket, peer};
        Reply r = srv->handler_(rq);
        answer(r, head.keep_alive && !r.close && !too_large);
        body.clear();
        too_large = false;
        if (closing) return;
        parser.resume();
        continue;
      }
      if (e != Parsed::ok) {
        Reply r;
        if (srv->opt_.refused) {
          r = srv->opt_.refused(parser.error_status(), parser.error_reason());
        } else {
          r.status = parser.error_status();
          r.body = std::string(parser.error_reason()) + "\n";
        }
        answer(r, false);
        return;
      }
      leftover.clear();
    }
  }
  void on_eof() override { finish(); }
  void on_error(int) override {
    if (closing) return;
    closing = true;
    tr->close();
  }
  void on_drained() override {}
  void on_closed() override {
    srv->conns.erase(this);
    delete this;
  }
};

namespace {

void on_connection(uv_stream_t* ls, int status) {
  if (status != 0) return;
  auto* l = static_cast<Server::Listener*>(ls->data);
  Server* s = l->srv;
  auto* c = new Server::Conn();
  c->srv = s;
  c->from = l;
  s->conns.insert(c);
  if (c->accept_from(ls, c, l->unix_socket) != 0) {
    c->closing = true;
    c->tr->close();
    return;
  }
  c->peer = c->peer_name(l->unix_socket);
  c->parser.init(Kind::request, c, &s->options().limits);
  c->parser.attach(&c->head);
  c->tr->read_start();
}

}  // namespace

Server::Server(uv_loop_t* loop, Handler h, Options o) : loop_(loop), handler_(std::move(h)), opt_(std::move(o)) {}

Server::~Server() { close(); }

int Server::start(Listener* l) {
  l->handle()->data = l;
  return uv_listen(reinterpret_cast<uv_stream_t*>(l->handle()), 128, on_connection);
}

int Server::listen_fd(int fd, int tag) {
  auto* l = listeners_.emplace_back(new Listener{this, tag, false}).get();
  uv_tcp_init(loop_, &l->tcp);
  int r = uv_tcp_open(&l->tcp, fd);
  return r ? r : start(l);
}

int Server::listen_tcp(const sockaddr* addr, int tag) {
  auto* l = listeners_.emplace_back(new Listener{this, tag, false}).get();
  uv_tcp_init(loop_, &l->tcp);
  int r = uv_tcp_bind(&l->tcp, addr, 0);
  return r ? r : start(l);
}

int Server::listen_unix(const std::string& path, int mode, int tag) {
  auto* l = listeners_.emplace_back(new Listener{this, tag, true}).get();
  uv_pipe_init(loop_, &l->pipe, 0);
  ::unlink(path.c_str());
  int r = uv_pipe_bind(&l->pipe, path.c_str());
  if (r == 0 && ::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) r = uv_translate_sys_error(errno);
  return r ? r : start(l);
}

int Server::port(int tag) const {
  for (const auto& l : listeners_) {
    if (l->unix_socket || l->tag != tag) continue;
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getsockname(&l->tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  return 0;
}

void Server::close() {
  // The listeners' memory outlives their close callbacks: it is freed with the server, after the loop ran.
  for (auto& l : listeners_)
    if (!uv_is_closing(l->handle())) uv_close(l->handle(), nullptr);
  for (Conn* c : std::set<Conn*>(conns)) {
    if (c->closing) continue;
    c->closing = true;
    c->tr->close();
  }
}

Server::Handler metrics_handler(std::function<std::string()> text) {
  return [text = std::move(text)](const ServerRequest& rq) {
    Reply r;
    const Head& h = rq.head;
    if (h.url().substr(0, h.url().find('?')) != "/metrics") {
      r.status = 404;
      r.body = "try GET /metrics\n";
    } else if (h.method != Method::get && h.method != Method::head) {
      r.status = 405;
      r.fields.emplace_back("Allow", "GET, HEAD");
      r.body = "GET or HEAD only\n";
    } else {
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = text();
    }
    return r;
  };
}

}  // namespace px::http
