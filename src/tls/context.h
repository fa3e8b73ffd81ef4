// px::tls contexts — the BoringSSL configuration of pxd's TLS listeners.
//
// One SSL_CTX serves every worker: session tickets are sealed with keys that
// BoringSSL generates and rotates inside it (every two days, the previous key
// still opens tickets), so a client resumes whichever worker accepts it. The
// stateful session cache is off (tickets only: no cache shared between
// workers). Certificates are not in the context: each handshake picks one from
// the worker's current CertTable (cert.h), so a certificate written to the
// store serves the next handshake, and connections already open keep theirs.
#pragma once
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tls/cert.h"

namespace px::tls {

// Mozilla's "intermediate" profile: TLS 1.2 and 1.3, ECDHE with AES-GCM or ChaCha20.
inline constexpr const char* kIntermediateCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr const char* kDefaultCurves = "X25519:P-256:P-384";

struct ServerOptions {
  uint16_t min_version = TLS1_2_VERSION;
  uint16_t max_version = TLS1_3_VERSION;
  std::string ciphers = kIntermediateCiphers;  // TLS 1.2 suites (TLS 1.3's are fixed)
  std::string curves = kDefaultCurves;
};

// What the certificate callback reads for one handshake: one per worker.
struct CertSource {
  std::shared_ptr<const CertTable> certs;  // the worker's current table
  bool reject_unknown_name = false;        // no match for the SNI: unrecognized_name, not the default
  uint64_t no_certificate = 0;             // handshakes refused for want of a certificate
};

// A stream listener's own certificate (route::StreamSpec "tls"), whatever the client asks for: the
// certificate named `cert`, or for "auto" the one serving the client's SNI name when that is one of
// `hosts`, else the first host's. No ALPN protocol is chosen on a stream (the bytes are not HTTP).
struct StreamCert {
  std::string_view cert;                            // a certificate's store name; "" = auto
  const std::vector<std::string>* hosts = nullptr;  // for auto
};

// The context for TLS listeners. nullptr and *error when the options are refused.
bssl::UniquePtr<SSL_CTX> make_server_ctx(const ServerOptions& o, std::string* error);
// A server-side SSL for one accepted connection, reading certificates from `src`; `h2`: ALPN may pick h2.
SSL* new_server_ssl(SSL_CTX* ctx, CertSource* src, bool h2);
// ... for a TLS stream: the certificate is the stream's (`sc` must outlive the SSL).
SSL* new_stream_ssl(SSL_CTX* ctx, CertSource* src, const StreamCert* sc);

// "TLSv1.2" -> TLS1_2_VERSION; 0 when unknown.
uint16_t parse_version(const std::string& s);

}  // namespace px::tls
