#include "tls/context.h"

#include <openssl/bytestring.h>
#include <openssl/err.h>

#include <cstring>

namespace px::tls {

namespace {
int source_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}
int reject_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

int stream_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

int h2_index() {  // non-null: the listener offers h2
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

// The host_name entry of the server_name extension (RFC 6066 3), or "".
std::string_view client_sni(const SSL_CLIENT_HELLO* hello) {
  const uint8_t* data;
  size_t len;
  if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_server_name, &data, &len)) return {};
  CBS ext, list;
  CBS_init(&ext, data, len);
  if (!CBS_get_u16_length_prefixed(&ext, &list)) return {};
  while (CBS_len(&list) > 0) {
    uint8_t type;
    CBS name;
    if (!CBS_get_u8(&list, &type) || !CBS_get_u16_length_prefixed(&list, &name)) return {};
    if (type == TLSEXT_NAMETYPE_host_name)
      return std::string_view(reinterpret_cast<const char*>(CBS_data(&name)), CBS_len(&name));
  }
  return {};
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// Does `name` fall under `host` (exact, or "*.example.com" one label deep)?
bool host_covers(std::string_view host, std::string_view name) {
  if (host.substr(0, 2) != "*.") return iequal(host, name);
  size_t dot = name.find('.');
  return dot != std::string_view::npos && dot > 0 && iequal(host.substr(1), name.substr(dot));
}

const Cert* stream_cert(const CertTable& t, const StreamCert& sc, std::string_view sni, bool ecdsa_ok) {
  if (!sc.cert.empty()) return t.by_name(sc.cert);
  if (!sc.hosts || sc.hosts->empty()) return nullptr;
  std::string want;
  for (const auto& h : *sc.hosts)
    if (!sni.empty() && host_covers(h, sni)) want = sni;
  if (want.empty()) {
    want = sc.hosts->front();
    if (want.rfind("*.", 0) == 0) want[0] = '_';  // a name the wildcard certificate serves
  }
  bool matched = false;
  const Cert* c = t.select(want, ecdsa_ok, &matched);
  return matched ? c : nullptr;
}

// Before the handshake goes on: the certificate for the name the client asked for.
ssl_select_cert_result_t select_certificate(const SSL_CLIENT_HELLO* hello) {
  SSL* ssl = hello->ssl;
  auto* src = static_cast<CertSource*>(SSL_get_ex_data(ssl, source_index()));
  std::string_view sni = client_sni(hello);
  bool matched = false;
  if (auto* sc = static_cast<const StreamCert*>(SSL_get_ex_data(ssl, stream_index()))) {
    const Cert* c = src && src->certs ? stream_cert(*src->certs, *sc, sni, client_takes_ecdsa(hello)) : nullptr;
    if (!c) {
      if (src) src->no_certificate++;
      return ssl_select_cert_error;
    }
    return use_cert(ssl, *c) ? ssl_select_cert_success : ssl_select_cert_error;
  }
  const Cert* c = src && src->certs ? src->certs->select(sni, client_takes_ecdsa(hello), &matched) : nullptr;
  if (!sni.empty() && !matched && src && src->reject_unknown_name) {
    // Refused in the server_name callback, which can choose the alert.
    SSL_set_ex_data(ssl, reject_index(), reinterpret_cast<void*>(1));
    return ssl_select_cert_success;
  }
  if (!c) {
    if (!sni.empty()) {  // counted there
      SSL_set_ex_data(ssl, reject_index(), reinterpret_cast<void*>(1));
      return ssl_select_cert_success;
    }
    if (src) src->no_certificate++;
    return ssl_select_cert_error;
  }
  return use_cert(ssl, *c) ? ssl_select_cert_success : ssl_select_cert_error;
}

int on_server_name(SSL* ssl, int* alert, void*) {
  if (SSL_get_ex_data(ssl, reject_index())) {
    auto* src = static_cast<CertSource*>(SSL_get_ex_data(ssl, source_index()));
    if (src) src->no_certificate++;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  return SSL_TLSEXT_ERR_OK;
}

// ALPN (RFC 7301): h2 when the client offers it and the listener takes HTTP/2, else http/1.1. The
// server's preference decides, as nginx and HAProxy do. A client offering neither gets no protocol
// (and speaks HTTP/1.1, as one that sends no ALPN).
int select_alpn(SSL* ssl, const uint8_t** out, uint8_t* out_len, const uint8_t* in, unsigned in_len, void*) {
  static const uint8_t kH1[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
  static const uint8_t kH2[] = {'h', '2'};
  if (SSL_get_ex_data(ssl, stream_index())) return SSL_TLSEXT_ERR_NOACK;  // a stream's bytes are not HTTP
  bool h2 = SSL_get_ex_data(ssl, h2_index()) != nullptr;
  const uint8_t* h1 = nullptr;
  CBS list;
  CBS_init(&list, in, in_len);
  while (CBS_len(&list) > 0) {
    CBS proto;
    if (!CBS_get_u8_length_prefixed(&list, &proto)) return SSL_TLSEXT_ERR_NOACK;
    if (h2 && CBS_len(&proto) == sizeof kH2 && memcmp(CBS_data(&proto), kH2, sizeof kH2) == 0) {
      *out = CBS_data(&proto);
      *out_len = sizeof kH2;
      return SSL_TLSEXT_ERR_OK;
    }
    if (CBS_len(&proto) == sizeof kH1 && memcmp(CBS_data(&proto), kH1, sizeof kH1) == 0) h1 = CBS_data(&proto);
  }
  if (!h1) return SSL_TLSEXT_ERR_NOACK;
  *out = h1;
  *out_len = sizeof kH1;
  return SSL_TLSEXT_ERR_OK;
}
}  // namespace

uint16_t parse_version(const std::string& s) {
  if (s == "TLSv1.2") return TLS1_2_VERSION;
  if (s == "TLSv1.3") return TLS1_3_VERSION;
  return 0;
}

bssl::UniquePtr<SSL_CTX> make_server_ctx(const ServerOptions& o, std::string* error) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) {
    *error = "cannot create a TLS context";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), o.min_version);
  SSL_CTX_set_max_proto_version(ctx.get(), o.max_version);
  if (!SSL_CTX_set_strict_cipher_list(ctx.get(), o.ciphers.c_str())) {
    ERR_clear_error();
    *error = "tls_ciphers: BoringSSL refuses the list '" + o.ciphers + "'";
    return nullptr;
  }
  if (!SSL_CTX_set1_curves_list(ctx.get(), o.curves.c_str())) {
    ERR_clear_error();
    *error = "tls_curves: BoringSSL refuses the list '" + o.curves + "'";
    return nullptr;
  }
  // Tickets only: no stateful cache (it would be one locked table shared by the workers).
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
  // One TLS 1.3 ticket per handshake (BoringSSL sends two by default): each costs an encryption and a
  // record, and a resumed handshake brings a fresh one. Go's and Caddy's servers send one too.
  SSL_CTX_set_num_tickets(ctx.get(), 1);
  // TLS 1.2: the server's order of tls_ciphers decides (AES-GCM with forward secrecy first).
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_select_certificate_cb(ctx.get(), select_certificate);
  SSL_CTX_set_tlsext_servername_callback(ctx.get(), on_server_name);
  SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, nullptr);
  return ctx;
}

SSL* new_server_ssl(SSL_CTX* ctx, CertSource* src, bool h2) {
  SSL* ssl = SSL_new(ctx);
  if (!ssl) return nullptr;
  SSL_set_ex_data(ssl, source_index(), src);
  if (h2) SSL_set_ex_data(ssl, h2_index(), ssl);
  // The certificate, its chain, the cipher and curve lists and ALPN are only read during the handshake: let
  // BoringSSL drop the connection's copy of them once it is done (about 1 KB less per established connection).
  SSL_set_shed_handshake_config(ssl, 1);
  SSL_set_accept_state(ssl);
  return ssl;
}

SSL* new_stream_ssl(SSL_CTX* ctx, CertSource* src, const StreamCert* sc) {
  SSL* ssl = new_server_ssl(ctx, src, false);
  if (ssl) SSL_set_ex_data(ssl, stream_index(), const_cast<StreamCert*>(sc));
  return ssl;
}

}  // namespace px::tls
