#include "http/side_server.h"

#include <arpa/inet.h>

#include "http/h1.h"
#include "net/uv_transport.h"

namespace px::http {

namespace {

struct SideConn final : Sink, net::TransportUser {
  SideServer* srv;
  net::UvTransport t;
  Parser parser;
  Head head;
  std::string pending;
  bool has_body = false;
  bool closing = false;

  int on_head(Head& h) override {
    has_body = (h.has_content_length && h.content_length > 0) || h.chunked;
    return has_body ? parser.set_error(413, "a request body is not accepted here") : 0;
  }
  int on_body(const char*, size_t) override { return 0; }
  int on_complete() override { return kPause; }

  void answer(const SideReply& r, bool keep) {
    net::Output o;
    std::string& out = o.begin_scratch();
    HeadWriter w(out);
    w.status_line(r.status);
    w.field("Content-Type", r.content_type);
    w.field("Cache-Control", "no-store");
    w.end_response(Framing::length, r.body.size(), false, !keep, false);
    if (head.method != Method::head) out += r.body;
    o.end_scratch();
    t.write(o);
    if (!keep) finish();
  }
  void finish() {
    if (closing) return;
    closing = true;
    t.read_stop();
    t.shutdown(true);
  }
  void on_data(const char* data, size_t len) override {
    pending.append(data, len);
    while (!closing && !pending.empty()) {
      Parsed e = parser.execute(pending.data(), pending.size());
      if (e == Parsed::paused) {
        pending.erase(0, static_cast<size_t>(parser.error_pos() - pending.data()));
        bool keep = head.keep_alive;
        answer(srv->handler()(head), keep);
        if (closing) return;
        parser.resume();
        continue;
      }
      if (e != Parsed::ok) {
        SideReply r;
        r.status = parser.error_status();
        r.body = std::string(parser.error_reason()) + "\n";
        answer(r, false);
        return;
      }
      pending.clear();
    }
  }
  void on_eof() override { finish(); }
  void on_error(int) override {
    closing = true;
    t.close();
  }
  void on_drained() override {}
  void on_closed() override {
    srv->conns.erase(this);
    delete this;
  }
};

}  // namespace

SideServer::Handler SideServer::metrics(std::function<std::string()> text) {
  return [text = std::move(text)](const Head& h) {
    SideReply r;
    if (h.url().substr(0, h.url().find('?')) != "/metrics") {
      r.status = 404;
      r.body = "try GET /metrics\n";
    } else if (h.method != Method::get && h.method != Method::head) {
      r.status = 405;
      r.body = "GET or HEAD only\n";
    } else {
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = text();
    }
    return r;
  };
}

SideServer::~SideServer() { close(); }

int SideServer::open_fd(int fd) {
  uv_tcp_init(loop_, &listener_);
  open_ = true;
  int r = uv_tcp_open(&listener_, fd);
  return r ? r : listen();
}

int SideServer::open_addr(const sockaddr* addr) {
  uv_tcp_init(loop_, &listener_);
  open_ = true;
  int r = uv_tcp_bind(&listener_, addr, 0);
  return r ? r : listen();
}

int SideServer::listen() {
  listener_.data = this;
  return uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 64, [](uv_stream_t* l, int status) {
    if (status != 0) return;
    auto* s = static_cast<SideServer*>(l->data);
    auto* c = new SideConn();
    c->srv = s;
    s->conns.insert(c);
    c->t.init(l->loop);
    c->t.set_user(c);
    if (c->t.accept(l) != 0) {
      c->closing = true;
      c->t.close();
      return;
    }
    c->parser.init(Kind::request, c, &s->limits());
    c->parser.attach(&c->head);
    c->t.read_start();
  });
}

int SideServer::port() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

void SideServer::close() {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  for (void* p : std::set<void*>(conns)) {
    auto* c = static_cast<SideConn*>(p);
    c->closing = true;
    c->t.close();
  }
}

}  // namespace px::http
