// px::tls ClientHello peeking — SNI passthrough reads the first flight of a
// TLS connection without terminating it (RFC 8446 4.1.2 and 5.1, RFC 6066 3):
// which name the client asks for decides whether pxd relays the raw bytes to
// a passthrough route's upstream or terminates TLS itself.
//
// HelloPeekTransport sits below the TLS layer (above TCP, or above the PROXY
// header reader): it holds bytes until a whole ClientHello is there, however
// many reads and records it came in, then asks its owner once. If the owner
// takes the connection, nothing is passed up; otherwise every byte held goes
// up unchanged and the peek steps aside. A malformed or oversized ClientHello
// is not the peek's to judge: it goes up to the TLS layer, which refuses it
// with an alert as it would any handshake.
#pragma once
#include <string>
#include <string_view>

#include "net/transport.h"

namespace px::tls {

// The largest ClientHello handshake message read (a post-quantum key share makes ~1.8 KB; BoringSSL's
// own limit for it is this size too).
inline constexpr size_t kMaxClientHello = 16384;

// -1: not a TLS ClientHello, malformed, or over kMaxClientHello (*error says why); 0: need more bytes;
// 1: a whole ClientHello, *sni its host_name lower-cased ("" when it names none).
int peek_client_hello(std::string_view in, std::string* sni, std::string* error);

class HelloDecider {
 public:
  // A whole ClientHello for `sni` ("" for none): true takes the connection (the owner then closes this
  // transport; `hello` is every byte read so far, to be relayed). Called at most once.
  virtual bool on_client_hello(std::string_view sni, std::string_view hello) = 0;

 protected:
  ~HelloDecider() = default;
};

class HelloPeekTransport final : public net::LayeredTransport {
 public:
  HelloPeekTransport(net::Transport* inner, HelloDecider* decider) : LayeredTransport(inner), decider_(decider) {}

  void on_data(const char* data, size_t len) override;
  void on_eof() override;

 private:
  HelloDecider* decider_;
  std::string buf_;
  bool done_ = false;   // the hello was read and decided on
  bool taken_ = false;  // ... and its owner took the connection
};

}  // namespace px::tls
