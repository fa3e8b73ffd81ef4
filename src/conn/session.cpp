// A session: one client connection. Its transport, the TLS handshake and SNI,
// the choice of codec (ALPN h2, an h2c listener's preface, else HTTP/1), the
// client timeouts, reading, closing. The codecs are H1Server (h1_server.cpp) and
// H2Conn (h2.cpp).
#include <cstring>

#include "codec/h2.h"
#include "conn/session.h"
#include "core/log.h"
#include "core/strings.h"
#include "daemon/worker.h"
#include "http/h1.h"
#include "stream/stream.h"
#include "tls/transport.h"
#include "upstream/upstream.h"

namespace px::proxy {

void Session::start() {
  tr->set_user(this);
  set_timeout(client.tls ? Timeout::handshake : Timeout::header);
  update_reading();
}

void Session::on_connected() {
  // TLS: the handshake is done; the request head has its own timeout from here.
  auto* t = static_cast<tls::TlsTransport*>(wrap.get());
  client.sni = t->sni();
  w->tls_handshakes.inc();
  set_timeout(Timeout::header);
  const uint8_t* proto = nullptr;
  unsigned proto_len = 0;
  SSL_get0_alpn_selected(t->ssl(), &proto, &proto_len);
  if (h2_allowed && proto_len == 2 && proto[0] == 'h' && proto[1] == '2') start_h2();
}

bool Session::idle() const { return h2 ? h2->idle() : h1.idle(); }

void Session::start_h2() {
  h2_decided = true;
  h2 = new H2Conn(this);
  if (!h2->start()) {
    PX_ERR("client %s: HTTP/2 could not start", client.peer_ip.str().c_str());
    close();
  }
}

bool Session::on_client_hello(std::string_view sni, std::string_view hello) {
  if (!l4_passthrough(w, fd(), client.peer_ip, sni, hello)) return false;
  close();  // the passthrough connection holds its own descriptor of the socket
  return true;
}

void Session::set_timeout(Timeout t) {
  if (timeout != Timeout::none) w->timeout_unlink(this);
  if (t != Timeout::none) w->timeout_link(this, t);
}

void Session::update_reading() {
  if (closing) return;
  bool want = want_read && !h1.bp_paused && !eof;
  if (want)
    tr->read_start();
  else
    tr->read_stop();
}

void Session::on_timeout(Timeout t) {
  if (closing) return;
  if (h2) {
    h2->on_timeout(t);
    return;
  }
  if (t == Timeout::handshake) {
    PX_DEBUG("client %s: TLS handshake timed out", client.peer_ip.str().c_str());
    w->tls_handshake_timeouts.inc();
    close();
    return;
  }
  if (t == Timeout::keepalive || !got_bytes) {
    // Idle keep-alive, or a connection that never sent a byte: just close.
    close();
    return;
  }
  if (h1.on_timeout(t)) return;
  close();
}

void Session::on_eof() {
  if (closing) return;
  eof = true;
  if (h2) {
    h2->on_eof();
    return;
  }
  h1.on_eof();
}

void Session::on_error(int) {
  if (closing) return;
  if (client.tls) {
    auto* t = static_cast<tls::TlsTransport*>(wrap.get());
    if (!t->established()) w->tls_handshake_failures[static_cast<int>(t->failure_class())].inc();
  }
  eof = true;
  close();
}

// The client preface of HTTP/2 with prior knowledge (RFC 9113 3.3).
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

void Session::on_data(const char* data, size_t n) {
  if (closing) return;
  got_bytes = true;
  if (h2) {
    h2->on_data(data, n);
    return;
  }
  if (!h2_decided && h2_allowed && !client.tls) {
    // An h2c listener: the first bytes say whether this is HTTP/2 with prior knowledge.
    if (!leftover.empty()) leftover.append(data, n);
    std::string_view got = leftover.empty() ? std::string_view(data, n) : leftover.view();
    size_t k = std::min(got.size(), kPreface.size());
    if (got.substr(0, k) == kPreface.substr(0, k)) {
      if (got.size() < kPreface.size()) {
        if (leftover.empty()) leftover.append(data, n);
        return;  // wait for the rest of the preface
      }
      std::string first(got);
      leftover.clear();
      start_h2();
      if (h2) h2->on_data(first.data(), first.size());
      return;
    }
    h2_decided = true;
    if (!leftover.empty()) {
      h1.parse(leftover.data(), leftover.size(), true);
      h1.after_event();
      return;
    }
  }
  if (timeout == Timeout::body) set_timeout(Timeout::body);  // the body timeout is between reads
  h1.on_data(data, n);
}

void Session::close_when_written() {
  want_read = false;
  update_reading();
  if (tr->queued() == 0)
    close();
  else
    writes_done_close = true;
}

void Session::on_drained() {
  if (closing) return;
  if (h2 && !writes_done_close) {
    h2->on_drained();
    return;
  }
  if (writes_done_close && tr->queued() == 0) {
    close();
    return;
  }
  h1.on_drained();
}

void Session::on_closed() {
  delete h2;
  delete this;
}

void Session::close() {
  if (closing) return;
  closing = true;
  h1.close_streams();
  if (h2) h2->close_streams();
  set_timeout(Timeout::none);
  tr->close();  // on_closed() frees the session, on a later loop iteration
  if (counted) w->session_closed(this);
}

}  // namespace px::proxy
