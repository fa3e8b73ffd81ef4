#include <doctest/doctest.h>

#include <string>

#include "http/parser.h"

using namespace px::http;

namespace {
struct Collect : Sink {
  Head head;
  std::string body;
  int heads = 0, completes = 0;
  int on_head(Head&) override {
    heads++;
    return 0;
  }
  int on_body(const char* d, size_t n) override {
    body.append(d, n);
    return 0;
  }
  int on_complete() override {
    completes++;
    return kPause;
  }
};

struct Run {
  Collect sink;
  Parser p;
  Limits limits;
  Parsed err = Parsed::ok;
  explicit Run(Kind t = Kind::request) {
    p.init(t, &sink, &limits);
    p.attach(&sink.head);
  }
  Parsed feed(const std::string& s, bool bytewise = false) {
    if (!bytewise) return err = p.execute(s.data(), s.size());
    for (char c : s) {
      err = p.execute(&c, 1);
      if (err != Parsed::ok) return err;
    }
    return err;
  }
};
}  // namespace

TEST_CASE("a request head is parsed into names and values") {
  for (bool bytewise : {false, true}) {
    Run r;
    r.feed("POST /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-Multi: one  \r\nContent-Length: 3\r\n\r\nabc", bytewise);
    CHECK(r.err == Parsed::paused);
    CHECK(r.sink.heads == 1);
    const Head& h = r.sink.head;
    CHECK(h.url() == "/a?b=1");
    CHECK(h.get("host") == "x.test");
    CHECK(h.get("x-multi") == "one");
    CHECK(h.content_length == 3);
    CHECK(h.has_content_length);
    CHECK(r.sink.body == "abc");
    CHECK(h.method_name() == "POST");
  }
}

TEST_CASE("chunked bodies are decoded") {
  Run r;
  r.feed("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", true);
  CHECK(r.err == Parsed::paused);
  CHECK(r.sink.head.chunked);
  CHECK(r.sink.body == "abcde");
}

static int status_of(const std::string& req, Kind t = Kind::request) {
  Run r(t);
  r.limits.max_head = 512;
  r.limits.max_headers = 5;
  r.limits.max_uri = 64;
  Parsed e = r.feed(req);
  if (e == Parsed::ok || e == Parsed::paused) return 0;
  return r.p.error_status();
}

TEST_CASE("smuggling and malformed requests are refused with the right status") {
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nFoo : bar\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nFoo: bar\r\n baz\r\n\r\n") == 400);
  CHECK(status_of(std::string("GET / HTTP/1.1\r\nHost: a\r\nFoo: b\0r\r\n\r\n", 36)) == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nFoo: b\rr\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nX: y\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
  CHECK(status_of("G@T / HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505);
  CHECK(status_of("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n") == 405);
  CHECK(status_of("GET /" + std::string(100, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n") == 414);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(600, 'a') + "\r\n\r\n") == 431);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n") == 431);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.0\r\n\r\n") == 0);  // HTTP/1.0 needs no Host
}

TEST_CASE("responses are held to the same rules, answered 502") {
  CHECK(status_of("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", Kind::response) == 502);
  CHECK(status_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Kind::response) == 502);
  CHECK(status_of("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", Kind::response) == 502);
  CHECK(status_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Kind::response) == 0);
}

TEST_CASE("the values px reads itself: Content-Length, Transfer-Encoding, Connection, the status line") {
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12345678901234567890\r\n\r\n") == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n") ==
        400);
  CHECK(status_of("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", Kind::response) == 502);
  for (bool bytewise : {false, true}) {
    Run r;
    r.feed(
        "\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length:  0000000000000000000000000003 \r\n"
        "Connection: close, X-Hop\r\nUpgrade: websocket\r\n\r\nabc",
        bytewise);
    CHECK(r.err == Parsed::paused);
    const Head& h = r.sink.head;
    CHECK(h.url() == "/x");
    CHECK(h.content_length == 3);
    CHECK(r.sink.body == "abc");
    CHECK(!h.keep_alive);
    CHECK(h.connection_tokens);
    CHECK(!h.upgrade);  // Upgrade without Connection: upgrade
    CHECK(h.listed_in_connection("x-hop"));
  }
  for (bool bytewise : {false, true}) {
    Run r(Kind::response);
    r.feed("HTTP/1.0 204 No Content here\r\nConnection: Keep-Alive\r\nServer: t\r\n\r\n", bytewise);
    CHECK(r.err == Parsed::paused);
    const Head& h = r.sink.head;
    CHECK(h.status == 204);
    CHECK(h.minor == 0);
    CHECK(h.keep_alive);
    CHECK(h.get("server") == "t");
  }
  {
    Run r(Kind::response);
    r.feed("HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    CHECK(r.err == Parsed::paused);  // (this sink pauses after each message)
    CHECK(r.sink.head.upgrade);
  }
}

TEST_CASE("a method llhttp names but px does not take is refused, and kept for the log") {
  Run r;
  CHECK(r.feed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == Parsed::failed);
  CHECK(r.p.error_status() == 400);
  CHECK(r.sink.head.method_name() == "PRI");
  Run u;
  CHECK(u.feed("BREW / HTTP/1.1\r\nHost: a\r\n\r\n") == Parsed::failed);
  CHECK(u.p.error_status() == 400);
  CHECK(u.sink.head.method_name().empty());
}

TEST_CASE("pipelined requests stop after each message") {
  Run r;
  std::string two = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  CHECK(r.feed(two) == Parsed::paused);
  CHECK(r.sink.head.url() == "/1");
  size_t used = static_cast<size_t>(r.p.error_pos() - two.data());
  r.p.resume();
  CHECK(r.p.execute(two.data() + used, two.size() - used) == Parsed::paused);
  CHECK(r.sink.head.url() == "/2");
  CHECK(r.sink.completes == 2);
}

#include "http/h1.h"

TEST_CASE("the codec's relay decisions: framing towards the client, closing, Expect") {
  auto head = [](const std::string& raw, Kind t) {
    Run r(t);
    r.feed(raw);
    return r.sink.head;
  };
  Head req11 = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Kind::request);
  Head req10 = head("GET / HTTP/1.0\r\n\r\n", Kind::request);
  Head req10ka = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Kind::request);
  Head up = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", Kind::request);
  Head cl = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Kind::response);
  Head ch = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Kind::response);
  Head eof = head("HTTP/1.1 200 OK\r\n\r\n", Kind::response);
  Head nc = head("HTTP/1.1 304 Not Modified\r\n\r\n", Kind::response);
  Head sw =
      head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", Kind::response);
  CHECK(relay_framing(req11, cl, false) == Framing::length);
  CHECK(relay_framing(req11, ch, false) == Framing::chunked);
  CHECK(relay_framing(req10, ch, false) == Framing::eof);  // an HTTP/1.0 client cannot take chunks
  CHECK(relay_framing(req11, eof, false) == Framing::chunked);
  CHECK(relay_framing(req10, eof, false) == Framing::eof);
  CHECK(relay_framing(req11, cl, true) == Framing::none);  // HEAD
  CHECK(relay_framing(req11, nc, false) == Framing::none);
  CHECK(relay_framing(up, sw, false) == Framing::none);
  CHECK(close_after_relay(req10, ch, Framing::eof));
  CHECK_FALSE(close_after_relay(req11, cl, Framing::length));
  CHECK(close_after_relay(req10, cl, Framing::length));
  CHECK_FALSE(close_after_relay(req10ka, cl, Framing::length));
  CHECK(close_after_relay(up, cl, Framing::length));  // the upgrade was refused
  CHECK_FALSE(close_after_relay(up, sw, Framing::none));
  CHECK(expectation(req11) == Expect::none);
  CHECK(expectation(head("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue \r\nContent-Length: 1\r\n\r\nx",
                         Kind::request)) == Expect::continue_100);
  CHECK(expectation(head("PUT / HTTP/1.1\r\nHost: a\r\nExpect: lunch\r\n\r\n", Kind::request)) == Expect::unsupported);
}
