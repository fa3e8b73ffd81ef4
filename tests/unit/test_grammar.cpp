// The codec's grammar (RFC 9112) byte for byte: vectors that got through llhttp
// 8.1 alone, fed whole and one byte at a time; Host; chunk lines; trailers;
// header names with "_".
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/grammar.h"
#include "http/parser.h"

using namespace px::http;

namespace {
struct Sink1 : Sink {
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

struct Outcome {
  int status = 0;  // 0: accepted
  int completes = 0;
  std::string body;
  std::string reason;
};

Outcome parse(const std::string& s, bool bytewise, Kind t = Kind::request, bool underscores = false,
              Head* out = nullptr) {
  Sink1 sink;
  Limits lim;
  lim.underscores = underscores;
  Parser p;
  p.init(t, &sink, &lim);
  p.attach(&sink.head);
  Parsed e = Parsed::ok;
  if (bytewise) {
    for (char c : s) {
      e = p.execute(&c, 1);
      if (e != Parsed::ok) break;
    }
  } else {
    e = p.execute(s.data(), s.size());
  }
  Outcome o;
  if (e != Parsed::ok && e != Parsed::paused && e != Parsed::upgrade) {
    o.status = p.error_status();
    o.reason = p.error_reason();
  }
  o.completes = sink.completes;
  o.body = sink.body;
  if (out) *out = sink.head;
  return o;
}

const std::string kChunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
}  // namespace

TEST_CASE("hostile request framing is refused, whole or byte by byte") {
  const std::vector<std::string> bad = {
      kChunked + "3\rX\r\nabc\r\n0\r\n\r\n",  // bare CR in a chunk-size line
      kChunked + "3\r\r\nabc\r\n0\r\n\r\n",
      kChunked + "3;a\rb\r\nabc\r\n0\r\n\r\n",  // ... in a chunk extension
      kChunked + "3;a\nb\r\nabc\r\n0\r\n\r\n",
      kChunked + "3\nabc\r\n0\r\n\r\n",  // bare LF ends a chunk line
      kChunked + "3\r\nabcXX0\r\n\r\n",  // chunk data not followed by CRLF
      kChunked + "3\r\nabc\n0\r\n\r\n",
      kChunked + "3\r\nabc\r\n0\r\n\n",     // last-chunk's terminator
      kChunked + "3 \r\nabc\r\n0\r\n\r\n",  // BWS not followed by ";"
      kChunked + " 3\r\nabc\r\n0\r\n\r\n",
      kChunked + "0x3\r\nabc\r\n0\r\n\r\n",
      kChunked + "3;=x\r\nabc\r\n0\r\n\r\n",                              // empty extension name
      kChunked + "3;a=\"x\r\nabc\r\n0\r\n\r\n",                           // unterminated quoted value
      kChunked + "3;" + std::string(5000, 'a') + "\r\nabc\r\n0\r\n\r\n",  // unbounded chunk line
      kChunked + "fffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
      kChunked + "3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n",  // bare CR in a trailer
      kChunked + "3\r\nabc\r\n0\r\n: x\r\n\r\n",      // empty trailer name
      "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",     // empty field name
      "GET / HTTP/1.1\r\nHost: a\r\n\rX: x\r\n\r\n",  // bare CR starting a line
      "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
      "b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f"
      "b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n",
      "GET / HTTP/1.1\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\rHost: a\r\n\r\n",
      "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",  // two spaces
      "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
      "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n",
      "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",  // userinfo in an absolute-form authority
      "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
  };
  for (const auto& s : bad)
    for (bool bytewise : {false, true}) {
      CAPTURE(s);
      CAPTURE(bytewise);
      Outcome o = parse(s, bytewise);
      CHECK(o.status == 400);
      CHECK(o.completes == 0);
    }
}

TEST_CASE("what RFC 9112 allows is accepted, whole or byte by byte") {
  struct Ok {
    std::string raw, body;
  };
  const std::vector<Ok> good = {
      {kChunked + "3\r\nabc\r\n0\r\n\r\n", "abc"},
      {kChunked + "3;a=b;c\r\nabc\r\n0\r\n\r\n", "abc"},
      {kChunked + "3 ; a = b\r\nabc\r\n0\r\n\r\n", "abc"},
      {kChunked + "3;a=\"x \\\" y\"\r\nabc\r\n00\r\n\r\n", "abc"},
      {kChunked + "A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", "0123456789"},
      {"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", ""},            // an empty line first (RFC 9112 2.2)
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\xff b\r\n\r\n", ""},  // obs-text in a value
      {"GET / HTTP/1.1\r\nHost: \r\n\r\n", ""},
      {"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", ""},
      {"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example:80\r\n\r\n", ""},
      {"GET http://a.test:81/x?y HTTP/1.1\r\nHost: a\r\n\r\n", ""},
      {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", ""},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  3 \r\n\r\nabc", "abc"},
  };
  for (const auto& g : good)
    for (bool bytewise : {false, true}) {
      CAPTURE(g.raw);
      CAPTURE(bytewise);
      Outcome o = parse(g.raw, bytewise);
      CHECK(o.status == 0);
      CHECK(o.reason == "");
      CHECK(o.completes == 1);
      CHECK(o.body == g.body);
    }
}

TEST_CASE("responses: the same grammar, refused with 502") {
  const std::vector<std::string> bad = {
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\rX\r\nabc\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\rX: x\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
  };
  for (const auto& s : bad)
    for (bool bytewise : {false, true}) {
      CAPTURE(s);
      CHECK(parse(s, bytewise, Kind::response).status == 502);
    }
  for (std::string s : {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
                        "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"})
    for (bool bytewise : {false, true}) {
      CAPTURE(s);
      Outcome o = parse(s, bytewise, Kind::response);
      CHECK(o.status == 0);
      CHECK(o.body == "ok");
    }
}

TEST_CASE("header names with an underscore are dropped unless allowed") {
  std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\nX_A: 1\r\nX-B: 2\r\n\r\n";
  for (bool bytewise : {false, true}) {
    Head h;
    CHECK(parse(raw, bytewise, Kind::request, false, &h).status == 0);
    CHECK(h.headers.size() == 2);
    CHECK(h.get("x-b") == "2");
    CHECK(h.get("x_a").empty());
    CHECK(!h.has_content_length);
    Head kept;
    CHECK(parse(raw, bytewise, Kind::request, true, &kept).status == 0);
    CHECK(kept.headers.size() == 4);
    CHECK(kept.get("x_a") == "1");
  }
}

TEST_CASE("Host grammar (RFC 3986 authority without userinfo)") {
  for (const char* ok : {"", "a", "a.b-c_d~e", "a:1", "a:65535", "a:", "127.0.0.1:80", "[::1]", "[2001:db8::1]:443",
                         "[::ffff:1.2.3.4]", "a%20b", "!$&'()*+;="})
    CHECK_MESSAGE(valid_host(ok), ok);
  for (const char* bad : {"a b", "u@a", "a/b", "a\\b", "a,b", "a:65536", "a:123456", "a:x", "[::1", "[]", "[1.2.3.4]",
                          "[::1]x", "a%2", "a%zz", "\xc3\xa9", "a\tb", "a?b", "a#b"})
    CHECK_MESSAGE(!valid_host(bad), bad);
}

TEST_CASE("a chunk line is bounded and its size checked for overflow") {
  ChunkLine c;
  c.start();
  size_t used = 0;
  std::string line = "00000000000000000000000000000000000000000000000003\r\n";  // leading zeros are fine
  CHECK(c.scan(line.data(), line.size(), &used) == ChunkLine::Result::done);
  CHECK(c.size() == 3);
  CHECK(used == line.size());
  c.start();
  std::string big = "1000000000000000\r\n";  // 2^60: refused before it can overflow
  CHECK(c.scan(big.data(), big.size(), &used) == ChunkLine::Result::bad);
  c.start();
  std::string max = "fffffffffffffff\r\n";
  CHECK(c.scan(max.data(), max.size(), &used) == ChunkLine::Result::done);
}

TEST_CASE("word-at-a-time name scanning agrees with the byte table for every byte in every position") {
  // A name of 16 letters with one byte replaced: accepted exactly when that byte is a tchar.
  for (int pos = 0; pos < 16; pos++)
    for (int b = 0; b < 256; b++) {
      std::string name(16, 'a');
      name[static_cast<size_t>(pos)] = static_cast<char>(b);
      std::string raw = "GET / HTTP/1.1\r\nHost: a\r\n" + name + ": v\r\n\r\n";
      // (a ':' inside ends the name early; the rest is then a valid value)
      bool tchar = has_class(static_cast<unsigned char>(b), kTchar) || (b == ':' && pos > 0);
      HeadGrammar g;
      g.start_request();
      size_t used = 0;
      auto r = g.scan(raw.data(), raw.size(), &used);
      CAPTURE(pos);
      CAPTURE(b);
      CHECK((r == HeadGrammar::Result::done) == tchar);
      // Values: the same for field-value bytes.
      std::string val(16, 'v');
      val[static_cast<size_t>(pos)] = static_cast<char>(b);
      raw = "GET / HTTP/1.1\r\nHost: a\r\nX: " + val + "\r\n\r\n";
      HeadGrammar g2;
      g2.start_request();
      r = g2.scan(raw.data(), raw.size(), &used);
      CHECK((r == HeadGrammar::Result::done) == has_class(static_cast<unsigned char>(b), kFieldChar));
      // Targets: VCHAR except '#'.
      std::string tgt = "/" + std::string(15, 't');
      if (pos > 0) tgt[static_cast<size_t>(pos)] = static_cast<char>(b);
      raw = "GET " + tgt + " HTTP/1.1\r\nHost: a\r\n\r\n";
      HeadGrammar g3;
      g3.start_request();
      r = g3.scan(raw.data(), raw.size(), &used);
      if (pos > 0) CHECK((r == HeadGrammar::Result::done) == has_class(static_cast<unsigned char>(b), kTarget));
    }
}
