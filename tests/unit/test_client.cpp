// http::Client (the HTTP/1 client of health probes, ACME, pxadmind's reads of
// pxd and pxctl) against real sockets on 127.0.0.1: an http::Server, and raw
// listeners that answer junk or nothing. The loop runs until nothing is left
// on it, so no test waits on a clock except the client's own timeout.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>
#include <optional>
#include <string>

#include "http/client.h"
#include "http/server.h"

using namespace px::http;

namespace {

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  uv_ip4_addr("127.0.0.1", port, &a);
  return a;
}

// A TCP listener that writes `answer` to each connection and then neither reads nor closes.
struct RawListener {
  uv_tcp_t server{};
  std::string answer;
  int port = 0;
  RawListener(uv_loop_t* loop, std::string a) : answer(std::move(a)) {
    uv_tcp_init(loop, &server);
    server.data = this;
    sockaddr_in addr = loopback(0);
    uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&addr), 0);
    uv_listen(reinterpret_cast<uv_stream_t*>(&server), 16, [](uv_stream_t* s, int) {
      auto* self = static_cast<RawListener*>(s->data);
      auto* c = new uv_tcp_t;
      uv_tcp_init(s->loop, c);
      uv_accept(s, reinterpret_cast<uv_stream_t*>(c));
      if (!self->answer.empty()) {
        uv_buf_t b = uv_buf_init(self->answer.data(), static_cast<unsigned>(self->answer.size()));
        uv_try_write(reinterpret_cast<uv_stream_t*>(c), &b, 1);
      }
      self->accepted.push_back(c);
    });
    sockaddr_storage ss{};
    int len = sizeof ss;
    uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&ss), &len);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  std::vector<uv_tcp_t*> accepted;
  void close() {
    for (uv_tcp_t* c : accepted)
      uv_close(reinterpret_cast<uv_handle_t*>(c), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    accepted.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
  }
};

// One fetch on `loop`, run until the client has nothing left in flight.
ClientResponse fetch(uv_loop_t* loop, Client& client, ClientRequest rq) {
  std::optional<ClientResponse> got;
  client.fetch(std::move(rq), [&](ClientResponse r) { got = std::move(r); });
  while (!got && uv_run(loop, UV_RUN_ONCE)) {}
  REQUIRE(got.has_value());
  return std::move(*got);
}

struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

}  // namespace

TEST_CASE("http::Client gets an answer, or says which kind of failure it met") {
  Loop l;
  Server server(
      &l.loop,
      [](const ServerRequest& rq) {
        Reply r;
        r.body = rq.head.url() == "/big" ? std::string(5000, 'x') : "hello " + std::string(rq.head.url());
        return r;
      },
      Server::Options{});
  sockaddr_in any = loopback(0);
  REQUIRE(server.listen_tcp(reinterpret_cast<const sockaddr*>(&any)) == 0);
  int port = server.port();
  RawListener junk(&l.loop, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
  RawListener silent(&l.loop, "");
  {
    Client client(&l.loop);
    client.max_body = 1000;
    client.timeout_ms = 100;  // for the silent peer only: the others answer or fail at once

    auto url = [](int p, const char* path) { return "http://127.0.0.1:" + std::to_string(p) + path; };
    auto get = [&](std::string u) {  // one GET of u, answered or failed
      ClientRequest rq;
      rq.url = std::move(u);
      return fetch(&l.loop, client, rq);
    };
    ClientResponse r = get(url(port, "/a"));
    CHECK(r.status == 200);
    CHECK(r.body == "hello /a");
    CHECK(r.failure == ClientFailure::none);

    SUBCASE("an address given as it is: no resolver, the URL's host stays the Host") {
      ClientRequest rq;
      rq.url = "http://peer.invalid:81/b";
      sockaddr_in a = loopback(port);
      memcpy(&rq.connect_addr, &a, sizeof a);
      r = fetch(&l.loop, client, rq);
      CHECK(r.status == 200);
      CHECK(r.body == "hello /b");
    }
    SUBCASE("a body over max_body") {
      r = get(url(port, "/big"));
      CHECK(r.status == 0);
      CHECK(r.failure == ClientFailure::too_large);
    }
    SUBCASE("an answer that is not HTTP/1") {
      r = get(url(junk.port, "/"));
      CHECK(r.status == 0);
      CHECK(r.failure == ClientFailure::bad_response);
      CHECK(r.error.find("invalid HTTP response") != std::string::npos);
    }
    SUBCASE("nobody listening") {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a = loopback(0);
      REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      socklen_t len = sizeof a;
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);  // bound, not listening: refused
      r = get(url(ntohs(a.sin_port), "/"));
      ::close(fd);
      CHECK(r.status == 0);
      CHECK(r.failure == ClientFailure::connect);
      CHECK(r.sys_error == UV_ECONNREFUSED);
    }
    SUBCASE("not a URL") {
      r = get("ftp://127.0.0.1/");
      CHECK(r.failure == ClientFailure::bad_url);
    }
    SUBCASE("a peer that never answers: the timeout") {
      r = get(url(silent.port, "/"));
      CHECK(r.status == 0);
      CHECK(r.failure == ClientFailure::timeout);
      CHECK(r.sys_error == UV_ETIMEDOUT);
    }
    SUBCASE("a cancelled call never calls back, and leaves nothing on the loop") {
      ClientRequest rq;
      rq.url = url(silent.port, "/");
      bool called = false;
      Client::Call* c = client.fetch(rq, [&](ClientResponse) { called = true; });
      // Let it connect first, so the cancel closes a live connection.
      while (silent.accepted.empty() && uv_run(&l.loop, UV_RUN_ONCE)) {}
      REQUIRE(silent.accepted.size() == 1);
      client.cancel(c);
      client.cancel(c);  // a second cancel of the same call is ignored
      // Without the cancel, the 100 ms timeout would call back. The listeners are closed, so the loop
      // ends once the call's own handles are released; the callback must not have run by then.
      junk.close();
      silent.close();
      server.close();
      uv_run(&l.loop, UV_RUN_DEFAULT);
      CHECK_FALSE(called);
      CHECK(uv_loop_alive(&l.loop) == 0);
      return;
    }
  }
  junk.close();
  silent.close();
  server.close();
  uv_run(&l.loop, UV_RUN_DEFAULT);  // the handles' close callbacks, before their owners go
}
