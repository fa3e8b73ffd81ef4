// ClientHello peeking for SNI passthrough (client_hello.h).
#include "tls/client_hello.h"

#include <openssl/bytestring.h>

#include <cstdint>

namespace px::tls {

namespace {

int fail(std::string* error, const char* why) {
  *error = why;
  return -1;
}

// The host_name of a server_name extension's body (RFC 6066 3): exactly one, a DNS name in ASCII.
int read_server_name(CBS ext, std::string* sni, std::string* error) {
  CBS list;
  if (!CBS_get_u16_length_prefixed(&ext, &list) || CBS_len(&ext) != 0 || CBS_len(&list) == 0)
    return fail(error, "malformed server_name extension");
  bool found = false;
  while (CBS_len(&list) > 0) {
    uint8_t type;
    CBS name;
    if (!CBS_get_u8(&list, &type) || !CBS_get_u16_length_prefixed(&list, &name))
      return fail(error, "malformed server_name extension");
    if (type != 0) continue;  // other name types: none is defined; ignored as RFC 6066 says
    if (found) return fail(error, "two host names in server_name");
    found = true;
    size_t n = CBS_len(&name);
    if (n == 0 || n > 255) return fail(error, "server_name host name of a bad length");
    const auto* p = CBS_data(&name);
    if (p[n - 1] == '.') n--;  // a trailing dot is not allowed, but names the same host
    if (n == 0 || p[0] == '.') return fail(error, "server_name is not a host name");
    sni->resize(n);
    for (size_t i = 0; i < n; i++) {
      char c = static_cast<char>(p[i]);
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
      if (!ok || (c == '.' && i + 1 < n && p[i + 1] == '.')) return fail(error, "server_name is not a host name");
      (*sni)[i] = c;
    }
  }
  return 1;
}

// The ClientHello body (after the 4-byte handshake header).
int read_hello(std::string_view body, std::string* sni, std::string* error) {
  CBS b, session_id, suites, compression, exts;
  CBS_init(&b, reinterpret_cast<const uint8_t*>(body.data()), body.size());
  uint16_t version;
  if (!CBS_get_u16(&b, &version) || (version >> 8) != 3 || !CBS_skip(&b, 32) ||
      !CBS_get_u8_length_prefixed(&b, &session_id) || CBS_len(&session_id) > 32 ||
      !CBS_get_u16_length_prefixed(&b, &suites) || CBS_len(&suites) < 2 || CBS_len(&suites) % 2 != 0 ||
      !CBS_get_u8_length_prefixed(&b, &compression) || CBS_len(&compression) < 1)
    return fail(error, "malformed ClientHello");
  sni->clear();
  if (CBS_len(&b) == 0) return 1;  // no extensions at all (no SNI)
  if (!CBS_get_u16_length_prefixed(&b, &exts) || CBS_len(&b) != 0)
    return fail(error, "malformed ClientHello extensions");
  uint16_t seen[128];
  size_t nseen = 0;
  while (CBS_len(&exts) > 0) {
    uint16_t type;
    CBS ext;
    if (!CBS_get_u16(&exts, &type) || !CBS_get_u16_length_prefixed(&exts, &ext))
      return fail(error, "malformed ClientHello extensions");
    for (size_t i = 0; i < nseen; i++)
      if (seen[i] == type) return fail(error, "an extension appears twice");  // RFC 8446 4.2
    if (nseen == sizeof seen / sizeof seen[0]) return fail(error, "too many extensions");
    seen[nseen++] = type;
    if (type == 0 && read_server_name(ext, sni, error) < 0) return -1;
  }
  return 1;
}

}  // namespace

int peek_client_hello(std::string_view in, std::string* sni, std::string* error) {
  // The handshake message may span records (RFC 8446 5.1); usually it is one, read in place.
  thread_local std::string joined;
  std::string_view hs;
  bool copied = false;
  size_t off = 0;
  for (int records = 0;; records++) {
    if (in.size() - off < 1) return 0;
    if (static_cast<uint8_t>(in[off]) != 22) return fail(error, "not a TLS handshake record");
    if (in.size() - off >= 2 && static_cast<uint8_t>(in[off + 1]) != 3) return fail(error, "not a TLS record");
    if (in.size() - off < 5) return 0;
    size_t len = static_cast<size_t>(static_cast<uint8_t>(in[off + 3])) << 8 | static_cast<uint8_t>(in[off + 4]);
    if (len == 0 || len > 16384) return fail(error, "a TLS record of a bad length");
    size_t have = std::min(len, in.size() - off - 5);
    std::string_view frag = in.substr(off + 5, have);
    std::string_view now;  // the handshake bytes known so far (this record possibly partial)
    if (records == 0) {
      now = frag;
    } else {
      if (!copied) joined.assign(hs), copied = true;
      joined.append(frag);
      now = joined;
    }
    if (now.size() >= 4) {
      if (now[0] != 1) return fail(error, "not a ClientHello");
      size_t mlen = static_cast<size_t>(static_cast<uint8_t>(now[1])) << 16 |
                    static_cast<size_t>(static_cast<uint8_t>(now[2])) << 8 | static_cast<uint8_t>(now[3]);
      if (mlen > kMaxClientHello) return fail(error, "a ClientHello over 16384 bytes");
      if (now.size() >= 4 + mlen) return read_hello(now.substr(4, mlen), sni, error);
    }
    if (have < len) return 0;  // the rest of this record has not arrived
    hs = now;
    off += 5 + len;
    if (records >= 64) return fail(error, "a ClientHello spread over too many records");
  }
}

void HelloPeekTransport::on_data(const char* data, size_t len) {
  if (taken_) return;  // the owner relays this connection now (and is closing this transport)
  if (done_) {
    user_->on_data(data, len);
    return;
  }
  std::string_view in(data, len);
  if (!buf_.empty()) {
    buf_.append(data, len);
    in = buf_;
  }
  std::string sni, error;
  int r = peek_client_hello(in, &sni, &error);
  if (r == 0) {
    if (buf_.empty()) buf_.assign(data, len);
    return;
  }
  done_ = true;
  if (r == 1 && decider_->on_client_hello(sni, in)) {  // taken: the owner closes this transport
    taken_ = true;
    std::string().swap(buf_);
    return;
  }
  if (closing_) return;
  if (buf_.empty()) {
    user_->on_data(data, len);
  } else {
    std::string held = std::move(buf_);
    buf_.clear();
    user_->on_data(held.data(), held.size());
  }
}

void HelloPeekTransport::on_eof() {
  if (taken_) return;
  if (!done_ && !buf_.empty()) {  // a partial ClientHello, then the end: TLS refuses it as it would
    done_ = true;
    std::string held = std::move(buf_);
    buf_.clear();
    user_->on_data(held.data(), held.size());
    if (closing_) return;
  }
  user_->on_eof();
}

}  // namespace px::tls
