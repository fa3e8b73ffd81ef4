// px-http-check: runs px's HTTP/1 codec (http::Parser) over byte streams and
// prints what it made of each, for the differential test against the
// reference grammar (tests/integration/test_differential.py) and for replaying
// fuzz findings by hand.
//
// Input on stdin: cases, each "<request|response> <split-seed> <length>\n" then
// <length> raw bytes. Output: one line per case,
//   <end> <msg>*      where end is end|incomplete|reject|upgrade and each msg
//                     is "<offset after the message>:<body as hex>"
// A split seed other than 0 feeds the bytes in pseudo-random pieces: the
// answer must not depend on how the bytes arrive.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "http/parser.h"

using namespace px::http;

namespace {
struct Sink1 : Sink {
  Head head;
  std::string body;
  int on_head(Head&) override { return 0; }
  int on_body(const char* d, size_t n) override {
    body.append(d, n);
    return 0;
  }
  // As a session does: stop after each message; after an upgrade the parser stops by itself.
  int on_complete() override { return head.upgrade ? 0 : kPause; }
};

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  for (unsigned char c : s) {
    o.push_back(d[c >> 4]);
    o.push_back(d[c & 15]);
  }
  return o.empty() ? "-" : o;
}

std::string run(const std::string& data, bool request, uint64_t seed) {
  Sink1 sink;
  Limits lim;
  Parser p;
  p.init(request ? Kind::request : Kind::response, &sink, &lim);
  p.attach(&sink.head);
  std::string out;
  size_t pos = 0;
  uint64_t x = seed;
  while (true) {
    size_t n = data.size() - pos;
    if (seed && n > 1) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      n = 1 + static_cast<size_t>((x >> 33) % n);
    }
    const char* at = data.data() + pos;
    Parsed e = p.execute(at, n);
    if (e == Parsed::paused || e == Parsed::upgrade) {
      size_t used = static_cast<size_t>(p.error_pos() - at);
      pos += used;
      out += " " + std::to_string(pos) + ":" + hex(sink.body);
      sink.body.clear();
      if (e == Parsed::upgrade) return "upgrade" + out;
      p.resume();
      continue;
    }
    if (e != Parsed::ok) return "reject" + out;
    pos += n;
    if (pos == data.size()) {
      if (!request && p.needs_eof()) {
        p.finish();
        out += " " + std::to_string(pos) + ":" + hex(sink.body);
        return "end" + out;
      }
      return (p.in_message() ? "incomplete" : "end") + out;
    }
  }
}
}  // namespace

int main() {
  std::string kind;
  uint64_t seed;
  size_t len;
  while (std::cin >> kind >> seed >> len) {
    std::cin.get();
    std::string data(len, '\0');
    std::cin.read(data.data(), static_cast<std::streamsize>(len));
    std::cout << run(data, kind == "request", seed) << "\n";
  }
  return 0;
}
