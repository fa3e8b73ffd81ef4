// A stream knows no wire format: here it is driven by a Downstream that is not
// HTTP/1 (it records what the stream tells it), through a real upstream on a
// loopback socket served from the same loop.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "conn/session.h"
#include "daemon/config.h"
#include "daemon/worker.h"
#include "route/route.h"
#include "route/snapshot.h"
#include "stream/stream.h"

using namespace px;

namespace {
template <class F>
bool run_until(uv_loop_t* loop, F cond) {
  for (int i = 0; i < 20000 && !cond(); i++) uv_run(loop, UV_RUN_NOWAIT);
  return cond();
}

// The client side, as a list of what the stream said.
struct Recorder final : proxy::Downstream {
  std::vector<std::string> calls;
  std::string head_fields, body;
  bool expectation_ok = true;
  bool done = false;
  proxy::ClientFacts facts;
  Recorder() { client = &facts; }
  Recorder& operator=(const Recorder& o) {
    calls = o.calls;
    head_fields = o.head_fields;
    body = o.body;
    expectation_ok = o.expectation_ok;
    done = o.done;
    facts = o.facts;
    client = &facts;
    return *this;
  }
  void send_head(proxy::Stream*, const proxy::ResponseHead& h) override {
    calls.push_back("head " + std::to_string(h.status));
    head_fields = std::string(h.from->get("x-up"));
  }
  void send_body(proxy::Stream*, const char* d, size_t n) override { body.append(d, n); }
  void send_end(proxy::Stream*) override { calls.push_back("end"); }
  void send_trailers(proxy::Stream*, const proxy::Fields& t) override {
    calls.push_back("trailers " + std::to_string(t.size()));
  }
  void send_reply(proxy::Stream*, int status, const proxy::Fields*, std::string_view b) override {
    calls.push_back("reply " + std::to_string(status));
    body.assign(b);
  }
  bool continue_request(proxy::Stream*) override {
    calls.push_back("continue");
    return expectation_ok;
  }
  void abandon_request(proxy::Stream*) override { calls.push_back("abandon"); }
  bool flush(proxy::Stream*) override { return true; }
  void progress(proxy::Stream* st) override { done = st->req_complete && st->resp_complete; }
  void reset(proxy::Stream*) override { calls.push_back("reset"); }
  bool retract(proxy::Stream*) override { return true; }
  void pause_request(proxy::Stream*) override {}
  void resume_request(proxy::Stream*) override {}
  void open_tunnel(proxy::Stream*, const char*, size_t) override { calls.push_back("tunnel"); }
  bool congested() const override { return false; }
};

// An upstream on 127.0.0.1 (a port the kernel picks), answering one fixed response per request.
struct Upstream {
  uv_tcp_t srv{}, conn{};
  std::string got;
  int port = 0;
  bool conn_open = false;
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* b) {
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
  }
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
    auto* u = static_cast<Upstream*>(s->data);
    if (n <= 0) return;
    u->got.append(b->base, static_cast<size_t>(n));
    if (u->got.find("\r\n\r\n") == std::string::npos) return;
    static const char resp[] = "HTTP/1.1 200 OK\r\nX-Up: yes\r\nContent-Length: 5\r\n\r\nhello";
    auto* req = new uv_write_t;
    uv_buf_t out = uv_buf_init(const_cast<char*>(resp), sizeof resp - 1);
    uv_write(req, s, &out, 1, [](uv_write_t* r, int) { delete r; });
  }
  static void on_conn(uv_stream_t* s, int) {
    auto* u = static_cast<Upstream*>(s->data);
    uv_tcp_init(s->loop, &u->conn);
    u->conn.data = u;
    u->conn_open = true;
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&u->conn)) == 0)
      uv_read_start(reinterpret_cast<uv_stream_t*>(&u->conn), on_alloc, on_read);
  }
  void start(uv_loop_t* loop) {
    uv_tcp_init(loop, &srv);
    srv.data = this;
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", 0, &a);
    REQUIRE(uv_tcp_bind(&srv, reinterpret_cast<const sockaddr*>(&a), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&srv), 8, on_conn) == 0);
    sockaddr_storage ss{};
    int len = sizeof ss;
    uv_tcp_getsockname(&srv, reinterpret_cast<sockaddr*>(&ss), &len);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  void stop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&srv), nullptr);
    if (conn_open) uv_close(reinterpret_cast<uv_handle_t*>(&conn), nullptr);
  }
};

// Parses one request head into a stream, as a downstream's codec would.
struct HeadOnly final : http::Sink {
  int on_head(http::Head&) override { return 0; }
  int on_body(const char*, size_t) override { return 0; }
  int on_complete() override { return kPause; }
};

struct Harness {
  Config cfg;
  proxy::Worker w{0, cfg};
  Upstream up;
  Recorder rec;
  Harness() {
    w.start_inline();
    up.start(w.loop());
    route::RouteSpec r;
    std::string err;
    std::string json =
        R"({"name":"n","hosts":["neutral.test"],"upstreams":["http://127.0.0.1:)" + std::to_string(up.port) + R"("]})";
    REQUIRE_MESSAGE(route::parse_route_json(json, &r, &err), err);
    std::vector<route::RouteSpec> specs{r};
    auto loopback = [](const std::string& host, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
      auto* a = reinterpret_cast<sockaddr_in*>(ss);
      *len = sizeof *a;
      return host == "127.0.0.1" && uv_ip4_addr(host.c_str(), port, a) == 0;
    };
    w.post_snapshot(route::Snapshot::build(1, std::move(specs), cfg, loopback, nullptr));
    REQUIRE(run_until(w.loop(), [&] { return w.applied_generation() == 1; }));
    REQUIRE(net::IpAddr::parse("198.51.100.9", &rec.facts.peer_ip));
  }
  proxy::Stream* begin(const std::string& head) {
    proxy::Stream* st = w.get_stream();
    st->down = &rec;
    HeadOnly sink;
    http::Parser p;
    p.init(http::Kind::request, &sink, &w.req_limits);
    p.attach(&st->req);
    http::Parsed e = p.execute(head.data(), head.size());
    REQUIRE((e == http::Parsed::paused || e == http::Parsed::ok));  // OK: a body would follow
    st->head_request = st->req.method == http::Method::head;
    if (st->req.content_length > 0) st->req_body = http::Framing::length;
    proxy::stream_begin(st);
    proxy::stream_body_end(st);
    return st;
  }
  ~Harness() {
    up.stop();
    w.finish_inline();
  }
};
}  // namespace

TEST_CASE("stream over a Downstream that is not HTTP/1: head, body and end of a relayed response") {
  Harness h;
  h.rec.facts.tls = true;
  proxy::Stream* st = h.begin("GET /p?q=1 HTTP/1.1\r\nHost: neutral.test\r\n\r\n");
  REQUIRE(run_until(h.w.loop(), [&] { return h.rec.done; }));
  CHECK(h.rec.calls == std::vector<std::string>{"continue", "head 200", "end"});
  CHECK(h.rec.head_fields == "yes");
  CHECK(h.rec.body == "hello");
  CHECK(st->status == 200);
  // The downstream's facts reach the upstream request: the peer address and TLS.
  CHECK(h.up.got.rfind("GET /p?q=1 HTTP/1.1\r\n", 0) == 0);
  CHECK(h.up.got.find("X-Forwarded-For: 198.51.100.9\r\n") != std::string::npos);
  CHECK(h.up.got.find("X-Forwarded-Proto: https\r\n") != std::string::npos);
  proxy::end_stream(st, false);
}

TEST_CASE("stream over a Downstream that is not HTTP/1: px's own answers go through send_reply") {
  Harness h;
  proxy::Stream* st = h.begin("GET / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n");
  CHECK(h.rec.calls == std::vector<std::string>{"reply 404"});
  CHECK(h.rec.body == "no route for this host and path\n");
  CHECK(st->resp_complete);
  proxy::end_stream(st, false);

  h.rec = Recorder();
  h.rec.expectation_ok = false;
  st = h.begin("PUT / HTTP/1.1\r\nHost: neutral.test\r\nExpect: something\r\nContent-Length: 3\r\n\r\n");
  CHECK(h.rec.calls == std::vector<std::string>{"continue", "abandon", "reply 417"});
  CHECK(h.up.got.empty());  // nothing went upstream
  proxy::end_stream(st, false);
}
