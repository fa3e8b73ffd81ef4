// A session driven with no socket: the worker's loop runs on the test's thread
// and the client is one end of an in-memory transport pair (net/memory_transport.h).
#include <doctest/doctest.h>

#include <string>

#include "conn/session.h"
#include "daemon/config.h"
#include "daemon/worker.h"
#include "net/memory_transport.h"
#include "route/snapshot.h"
#include "stream/stream.h"

using namespace px;

namespace {
struct Client final : net::TransportUser {
  std::string got;
  bool eof = false, closed = false;
  void on_data(const char* d, size_t n) override { got.append(d, n); }
  void on_eof() override { eof = true; }
  void on_error(int) override { eof = true; }
  void on_drained() override {}
  void on_closed() override { closed = true; }
};

// Runs the loop until cond() holds (bounded: a stuck session fails the test, it does not hang it).
template <class F>
bool run_until(uv_loop_t* loop, F cond) {
  for (int i = 0; i < 10000 && !cond(); i++) uv_run(loop, UV_RUN_NOWAIT);
  return cond();
}

struct Harness {
  Config cfg;
  proxy::Worker w{0, cfg};
  net::MemoryTransport client_end, server_end;
  Client client;
  Harness() {
    std::vector<route::RouteSpec> none;
    w.post_snapshot(route::Snapshot::build(1, std::move(none), cfg, nullptr, nullptr));
    w.start_inline();
    net::MemoryTransport::pair(w.loop(), client_end, server_end);
    client_end.set_user(&client);
    client_end.read_start();
    net::IpAddr ip;
    REQUIRE(net::IpAddr::parse("192.0.2.7", &ip));
    w.adopt(&server_end, ip);
  }
  void send(const std::string& s) {
    net::Output o;
    o.copy(s);
    REQUIRE(client_end.write(o) == 0);
  }
  ~Harness() {
    client_end.close();
    run_until(w.loop(), [&] { return client.closed; });
    w.finish_inline();
  }
};

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) n++;
  return n;
}
}  // namespace

TEST_CASE("session over an in-memory transport: pipelined answers in order, then a 400 closes") {
  Harness h;
  h.send(
      "GET /a HTTP/1.1\r\nHost: nowhere.test\r\n\r\nGET /b HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
      "GET /c HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(run_until(h.w.loop(), [&] { return h.client.eof; }));
  const std::string& got = h.client.got;
  CHECK(count(got, "HTTP/1.1 404 Not Found\r\n") == 2);
  CHECK(count(got, "HTTP/1.1 400 Bad Request\r\n") == 1);
  CHECK(got.find("404") < got.find("400"));
  CHECK(got.find("empty header name") != std::string::npos);
  CHECK(got.rfind("Connection: close") > got.find("400"));
  CHECK(count(got, "HTTP/1.1 ") == 3);  // nothing after the bad request is answered
}

TEST_CASE("session over an in-memory transport: a request split byte by byte, keep-alive, HTTP/1.0 closes") {
  Harness h;
  std::string req = "GET /x HTTP/1.1\r\nHost: nowhere.test\r\nX-A: 1\r\n\r\n";
  for (char c : req) {
    h.send(std::string(1, c));
    uv_run(h.w.loop(), UV_RUN_NOWAIT);
  }
  REQUIRE(run_until(h.w.loop(), [&] {
    return h.client.got.find("\r\n\r\n") != std::string::npos && h.client.got.find("no route") != std::string::npos;
  }));
  CHECK(h.client.got.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
  CHECK(!h.client.eof);  // kept alive
  h.send("GET /y HTTP/1.0\r\n\r\n");
  REQUIRE(run_until(h.w.loop(), [&] { return h.client.eof; }));
  CHECK(count(h.client.got, "HTTP/1.1 404") == 2);
  CHECK(h.client.got.find("Connection: close") > h.client.got.rfind("HTTP/1.1 404"));
}

TEST_CASE("session over an in-memory transport: a client that goes away mid-head is closed quietly") {
  Harness h;
  h.send("GET /partial HTTP/1.1\r\nHost: x");
  uv_run(h.w.loop(), UV_RUN_NOWAIT);
  h.client_end.shutdown();
  REQUIRE(run_until(h.w.loop(), [&] { return h.client.eof; }));
  CHECK(h.client.got.empty());
}
