#include "http/client_conn.h"

#include <openssl/x509.h>

namespace px::http {

void ClientConn::open_tcp(uv_loop_t* loop, net::TransportUser* user) {
  tcp.init(loop);
  tcp.set_user(user);
  tr = &tcp;
}

void ClientConn::open_tcp(std::unique_ptr<net::SocketTransport> t, net::TransportUser* user) {
  ep = std::move(t);
  ep->set_user(user);
  tr = ep.get();
}

void ClientConn::open_unix(uv_loop_t* loop, net::TransportUser* user) {
  pipe = std::make_unique<net::UvPipeTransport>();
  pipe->init(loop);
  pipe->set_user(user);
  tr = pipe.get();
}

void ClientConn::start_tls(SSL* ssl, net::TransportUser* user) {
  if (!pipe) nodelay();                        // the handshake's flights go out at once
  wrap.reset(new tls::TlsTransport(ssl, tr));  // the TLS layer is the inner transport's user now
  tr = wrap.get();
  tr->set_user(user);
}

int ClientConn::connect(const sockaddr* addr) {
  if (!ep) return tcp.connect(addr);
  int r = ep->connect(addr);
  if (r == 0 && wrap) ep->nodelay();  // (libuv applies start_tls()'s nodelay() at the connect)
  return r;
}

std::string ClientConn::tls_failure() const {
  if (!wrap || !wrap->failure()) return "";
  long v = SSL_get_verify_result(wrap->ssl());
  if (v != X509_V_OK) return std::string("certificate verification: ") + X509_verify_cert_error_string(v);
  return wrap->failure();
}

}  // namespace px::http
