// px::tls::TlsTransport — TLS (BoringSSL) as a Transport that wraps another
// transport: the layer above sees plaintext and knows nothing of TLS; the
// layer below sees ciphertext and knows nothing of HTTP. One class serves
// both sides: a server handshake (pxd's TLS listeners) and a client one
// (HTTPS upstreams, ACME).
//
//   user (Session, UpConn) ⇄ TlsTransport ⇄ inner transport (UvTransport: TCP)
//
// BoringSSL reads ciphertext straight from the bytes the inner transport hands
// over (a custom BIO, no copy into a memory BIO) and writes into a per-thread
// buffer that is handed to the inner transport after every TLS call. An idle
// connection holds no TLS buffers: BoringSSL releases them when they are empty.
//
// Plaintext written before the handshake ends waits, then leaves in order.
// Lifecycle: close() closes the inner transport; its on_closed() is passed on
// as the last event (the user may free both then).
#pragma once
#include <openssl/ssl.h>

#include <string>
#include <string_view>

#include "net/transport.h"

namespace px::tls {

// Why a handshake failed, in classes an operator can act on (metrics: px_tls_handshake_failures_total).
enum class HandshakeFailure : uint8_t {
  none,
  closed,            // the peer went away mid-handshake
  plain_http,        // an HTTP request on a TLS port
  protocol_version,  // no TLS version in common
  no_shared_cipher,  // no cipher suite or group in common
  no_certificate,    // no certificate for the name asked for
  peer_alert,        // the peer refused (an alert: it did not trust our certificate, ...)
  bad_handshake,     // anything else: garbage, a malformed ClientHello
};
inline constexpr int kHandshakeFailures = 8;
const char* handshake_failure_name(HandshakeFailure f);

class TlsTransport final : public net::Transport, public net::TransportUser {
 public:
  // Owns `ssl` (the caller made it in accept or connect state); becomes
  // `inner`'s user. `inner` must outlive this transport.
  TlsTransport(SSL* ssl, net::Transport* inner);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  // A client: call once the inner transport is connected (sends the ClientHello).
  void start_client();

  // net::Transport (plaintext, for the user)
  void read_start() override;
  void read_stop() override;
  int write(net::Output& out) override;
  size_t queued() const override;
  void shutdown(bool then_close = false) override;
  void close() override;

  bool established() const { return established_; }
  SSL* ssl() const { return ssl_; }
  std::string_view sni() const;      // the name the client asked for ("" if none)
  std::string_view version() const;  // "TLSv1.3", after the handshake
  // Why the handshake failed (for logs and counts), or nullptr.
  const char* failure() const { return failure_; }
  HandshakeFailure failure_class() const { return failure_class_; }

  // net::TransportUser (the inner transport: ciphertext)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;
  void on_shutdown() override { user_->on_shutdown(); }
  void on_closed() override;

  // For the BIO (transport.cpp).
  int bio_read(char* out, int len);

 private:
  void advance();           // handshake, then plaintext to the user while it reads
  bool flush_ciphertext();  // what BoringSSL wrote, to the inner transport
  void fail(const char* why);

  SSL* ssl_;
  net::Transport* inner_;
  const char* in_ = nullptr;  // ciphertext being handed to BoringSSL (during on_data)
  size_t in_len_ = 0;
  std::string stash_;  // ciphertext that arrived while the user was not reading
  size_t stash_off_ = 0;
  std::string early_;  // plaintext written before the handshake ended
  const char* failure_ = nullptr;
  HandshakeFailure failure_class_ = HandshakeFailure::none;
  bool established_ = false;
  bool eof_ = false;       // the inner transport ended
  bool eof_told_ = false;  // ... and the user was told
  bool in_advance_ = false;
  bool dead_ = false;       // an error was reported: nothing more goes through
  bool acked_ = false;      // the first read after the handshake was acknowledged at once
  uint64_t delivered_ = 0;  // plaintext bytes handed to the user
};

}  // namespace px::tls
