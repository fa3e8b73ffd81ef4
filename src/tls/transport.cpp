#include "tls/transport.h"

#include <openssl/err.h>
#include <uv.h>

#include <climits>
#include <cstring>
#include <memory>

#include "core/log.h"

namespace px::tls {

namespace {
// Per thread: the ciphertext BoringSSL wrote during one TLS call (handed to the
// inner transport right after it), and the plaintext read buffer (data handed
// to on_data is valid during the call only).
thread_local std::string t_cipher;
thread_local std::unique_ptr<char[]> t_plain;
constexpr int kPlain = 16 * 1024;  // one TLS record's plaintext at most

int bio_read_cb(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  int n = static_cast<TlsTransport*>(BIO_get_data(b))->bio_read(out, len);
  if (n < 0) BIO_set_retry_read(b);
  return n;
}
int bio_write_cb(BIO* b, const char* in, int len) {
  BIO_clear_retry_flags(b);
  t_cipher.append(in, static_cast<size_t>(len));
  return len;
}
long bio_ctrl_cb(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
int bio_create_cb(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}
const BIO_METHOD* bio_method() {
  static const BIO_METHOD* m = [] {
    BIO_METHOD* bm = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "px-transport");
    BIO_meth_set_read(bm, bio_read_cb);
    BIO_meth_set_write(bm, bio_write_cb);
    BIO_meth_set_ctrl(bm, bio_ctrl_cb);
    BIO_meth_set_create(bm, bio_create_cb);
    return bm;
  }();
  return m;
}
}  // namespace

TlsTransport::TlsTransport(SSL* ssl, net::Transport* inner) : ssl_(ssl), inner_(inner) {
  BIO* bio = BIO_new(bio_method());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // the SSL owns the BIO (one reference for both directions)
  inner_->set_user(this);
}

TlsTransport::~TlsTransport() { SSL_free(ssl_); }

int TlsTransport::bio_read(char* out, int len) {
  if (!stash_.empty()) {
    size_t n = stash_.size() - stash_off_;
    if (n > static_cast<size_t>(len)) n = static_cast<size_t>(len);
    memcpy(out, stash_.data() + stash_off_, n);
    stash_off_ += n;
    if (stash_off_ == stash_.size()) {
      std::string().swap(stash_);
      stash_off_ = 0;
    }
    return static_cast<int>(n);
  }
  if (in_len_ == 0) return eof_ ? 0 : -1;
  size_t n = in_len_ < static_cast<size_t>(len) ? in_len_ : static_cast<size_t>(len);
  memcpy(out, in_, n);
  in_ += n;
  in_len_ -= n;
  return static_cast<int>(n);
}

bool TlsTransport::flush_ciphertext() {
  if (t_cipher.empty()) return true;
  thread_local net::Output o;
  o.ref(t_cipher);
  int r = inner_->write(o);  // copies what the kernel does not take at once
  if (t_cipher.capacity() > 256 * 1024)
    std::string().swap(t_cipher);
  else
    t_cipher.clear();
  return r == 0;
}

const char* handshake_failure_name(HandshakeFailure f) {
  static const char* names[kHandshakeFailures] = {
      "none",           "closed",     "plain_http",   "protocol_version", "no_shared_cipher",
      "no_certificate", "peer_alert", "bad_handshake"};
  return names[static_cast<int>(f)];
}

namespace {
HandshakeFailure classify(uint32_t e, bool eof) {
  if (eof) return HandshakeFailure::closed;
  if (!e || ERR_GET_LIB(e) != ERR_LIB_SSL) return HandshakeFailure::bad_handshake;
  int r = ERR_GET_REASON(e);
  if (r >= SSL_AD_REASON_OFFSET) return HandshakeFailure::peer_alert;
  switch (r) {
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST: return HandshakeFailure::plain_http;
    case SSL_R_UNSUPPORTED_PROTOCOL: return HandshakeFailure::protocol_version;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUP: return HandshakeFailure::no_shared_cipher;
    case SSL_R_CONNECTION_REJECTED:
    case SSL_R_CERT_CB_ERROR:
    case SSL_R_NO_CERTIFICATE_SET: return HandshakeFailure::no_certificate;
    default: return HandshakeFailure::bad_handshake;
  }
}
}  // namespace

void TlsTransport::fail(const char* why) {
  if (dead_) return;
  dead_ = true;
  failure_ = why;
  uint32_t e = ERR_peek_error();
  if (!established_) failure_class_ = classify(e, eof_ || (!e && strcmp(why, "write failed") == 0));
  if (e) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    PX_DEBUG("tls: %s: %s", why, buf);
  } else {
    PX_DEBUG("tls: %s", why);
  }
  ERR_clear_error();
  user_->on_error(UV_EPROTO);
}

void TlsTransport::advance() {
  if (in_advance_ || dead_ || closing_) return;
  in_advance_ = true;
  if (!established_) {
    int r = SSL_do_handshake(ssl_);
    bool sent = flush_ciphertext();  // our flight (or an alert)
    if (r != 1) {
      int e = SSL_get_error(ssl_, r);
      in_advance_ = false;
      if (e == SSL_ERROR_WANT_READ && !eof_ && sent) return;
      fail(eof_ ? "the peer closed during the handshake" : !sent ? "write failed" : "handshake failed");
      return;
    }
    established_ = true;
    if (!early_.empty()) {
      SSL_write(ssl_, early_.data(), static_cast<int>(early_.size()));
      std::string().swap(early_);
      flush_ciphertext();
    }
    user_->on_connected();
    if (closing_ || dead_) {
      in_advance_ = false;
      return;
    }
  }
  if (!t_plain) t_plain.reset(new char[kPlain]);
  while (reading_ && !closing_ && !dead_) {
    int n = SSL_read(ssl_, t_plain.get(), kPlain);
    if (n > 0) {
      delivered_ += static_cast<uint64_t>(n);
      user_->on_data(t_plain.get(), static_cast<size_t>(n));
      continue;
    }
    flush_ciphertext();  // a session ticket, a key update's answer
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ && !eof_) break;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN || (eof_ && e == SSL_ERROR_SYSCALL)) {
      // close_notify, or the connection ended (a truncation reads as the end too, as HTTP/1 framing decides)
      ERR_clear_error();
      if (!eof_told_) {
        eof_told_ = true;
        reading_ = false;
        in_advance_ = false;
        user_->on_eof();
        return;
      }
      break;
    }
    in_advance_ = false;
    fail("bad record");
    return;
  }
  flush_ciphertext();
  in_advance_ = false;
}

void TlsTransport::on_data(const char* data, size_t len) {
  if (dead_ || closing_) return;
  in_ = data;
  in_len_ = len;
  uint64_t before = delivered_;
  advance();
  if (established_ && !acked_ && !dead_ && !closing_) {
    // The read that ended the handshake. TLS 1.3: BoringSSL sent its tickets with its own
    // Finished, so the client's Finished gets no answer to carry the ACK, and a client with
    // Nagle on holds its request until the delayed ACK (40 ms). Acknowledge it at once.
    acked_ = true;
    if (delivered_ == before) inner_->ack_now();
  }
  if (in_len_ > 0 && !dead_ && !closing_) {
    // The user stopped reading: keep the rest until it reads again.
    stash_.append(in_, in_len_);
  }
  in_ = nullptr;
  in_len_ = 0;
  if (established_ && !reading_ && !closing_) inner_->read_stop();
}

void TlsTransport::on_eof() {
  if (dead_ || closing_) return;
  eof_ = true;
  advance();
}

void TlsTransport::on_error(int err) {
  if (dead_ || closing_) return;
  dead_ = true;
  user_->on_error(err);
}

void TlsTransport::on_drained() {
  if (established_ && !dead_ && !closing_) user_->on_drained();
}

void TlsTransport::on_connected() { start_client(); }

void TlsTransport::on_closed() { user_->on_closed(); }  // the last event: the user may free this now

void TlsTransport::start_client() {
  inner_->read_start();
  advance();
}

void TlsTransport::read_start() {
  if (closing_ || dead_) return;
  bool was = reading_;
  reading_ = true;
  inner_->read_start();
  // Plaintext may wait inside BoringSSL or in the stash: no new bytes would announce it.
  if (!was && established_ && (!stash_.empty() || SSL_has_pending(ssl_) || (eof_ && !eof_told_))) advance();
}

void TlsTransport::read_stop() {
  reading_ = false;
  if (established_) inner_->read_stop();
}

int TlsTransport::write(net::Output& out) {
  if (out.empty()) return 0;
  if (closing_ || dead_) {
    out.clear();
    return UV_ECANCELED;
  }
  if (!established_) {
    for (size_t i = 0; i < out.count(); i++) early_.append(out.data(i), out.len(i));
    out.clear();
    return 0;
  }
  // One SSL_write for the whole chain: records fill up, instead of one per piece.
  thread_local std::string gather;
  const char* p;
  size_t n;
  if (out.count() == 1) {
    p = out.data(0);
    n = out.len(0);
  } else {
    gather.clear();
    for (size_t i = 0; i < out.count(); i++) gather.append(out.data(i), out.len(i));
    p = gather.data();
    n = gather.size();
  }
  while (n > 0) {
    int chunk = n > INT_MAX / 2 ? INT_MAX / 2 : static_cast<int>(n);
    int r = SSL_write(ssl_, p, chunk);
    if (r <= 0) {
      out.clear();
      flush_ciphertext();
      ERR_clear_error();
      return UV_EPROTO;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  out.clear();
  if (gather.capacity() > 256 * 1024) std::string().swap(gather);
  return flush_ciphertext() ? 0 : UV_EPIPE;
}

size_t TlsTransport::queued() const { return inner_->queued() + early_.size(); }

void TlsTransport::shutdown(bool then_close) {
  if (closing_) return;
  if (established_ && !dead_) {
    SSL_shutdown(ssl_);  // close_notify
    flush_ciphertext();
  }
  inner_->shutdown(then_close);
}

void TlsTransport::close() {
  if (closing_) return;
  if (established_ && !dead_ && !eof_) {
    SSL_shutdown(ssl_);
    flush_ciphertext();
    ERR_clear_error();
  }
  closing_ = true;
  reading_ = false;
  inner_->close();
}

std::string_view TlsTransport::sni() const {
  const char* s = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return s ? std::string_view(s) : std::string_view();
}

std::string_view TlsTransport::version() const { return SSL_get_version(ssl_); }

}  // namespace px::tls
