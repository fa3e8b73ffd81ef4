// libFuzzer target for px's HTTP/1 codec (http::Parser and http/grammar).
// The first input byte picks requests or responses and how the rest is cut
// into pieces; the rest is the byte stream. Besides what ASan and UBSan catch,
// it checks the codec's own promises:
//   - the outcome (messages, where each ends, bodies, the final state) does not
//     depend on how the bytes arrive: whole and in pieces must agree;
//   - a body never holds more bytes than arrived, and message ends only move forward.
// Build and run: tests/fuzz/run [seconds]; CI replays tests/fuzz/corpus/.
#include <cstdint>
#include <cstdlib>
#include <string>

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
  int on_complete() override { return head.upgrade ? 0 : kPause; }
};

std::string run(const uint8_t* data, size_t size, bool request, uint64_t seed) {
  Sink1 sink;
  Limits lim;
  lim.max_head = 2048;
  lim.max_uri = 512;
  lim.max_headers = 20;
  Parser p;
  p.init(request ? Kind::request : Kind::response, &sink, &lim);
  p.attach(&sink.head);
  std::string out;
  size_t pos = 0, last_end = 0;
  uint64_t x = seed;
  while (true) {
    size_t n = size - pos;
    if (seed && n > 1) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      n = 1 + static_cast<size_t>((x >> 33) % n);
    }
    const char* at = reinterpret_cast<const char*>(data) + pos;
    Parsed e = p.execute(at, n);
    if (e == Parsed::paused || e == Parsed::upgrade) {
      size_t used = static_cast<size_t>(p.error_pos() - at);
      if (used > n) abort();
      pos += used;
      if (pos < last_end || sink.body.size() > pos) abort();
      last_end = pos;
      out += std::to_string(pos) + ":" + sink.body + "|";
      sink.body.clear();
      if (e == Parsed::upgrade) return out + "upgrade";
      p.resume();
      continue;
    }
    if (e != Parsed::ok) return out + "reject " + std::to_string(p.error_status());
    pos += n;
    if (pos == size) return out + (p.in_message() ? "incomplete" : "end");
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  bool request = (data[0] & 1) == 0;
  uint64_t seed = data[0] >> 1 | 1;
  std::string whole = run(data + 1, size - 1, request, 0);
  std::string pieces = run(data + 1, size - 1, request, seed);
  if (whole != pieces) abort();
  return 0;
}
