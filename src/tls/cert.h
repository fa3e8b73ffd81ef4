// px::tls certificates — parsing and checking a certificate chain with its key
// (PEM, as an operator uploads it or ACME delivers it), and choosing which one
// serves a TLS handshake (SNI: exact name, then wildcard, then the default;
// ECDSA when the client can take it, else RSA). pxadmind checks uploads with
// parse_cert(); pxd builds a CertTable per store generation. Pure code: the
// unit tests drive it without sockets.
#pragma once
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace px::tls {

struct Cert {
  std::string name;                       // the store name (cert:<name>)
  std::vector<std::string> names;         // DNS names the leaf serves, lower case ("*.example.com" for a wildcard)
  std::string issuer;                     // the leaf issuer's common name (or its whole name)
  std::string serial;                     // hex
  int64_t not_before = 0, not_after = 0;  // unix seconds
  bool ecdsa = false;                     // the key type: ECDSA, else RSA
  bssl::UniquePtr<EVP_PKEY> key;
  std::vector<bssl::UniquePtr<CRYPTO_BUFFER>> chain;  // DER, the leaf first
  std::string ocsp;              // a DER OCSP response to staple ("" = none), from the store record
  int64_t ocsp_next_update = 0;  // ... stapled until then (0 = no nextUpdate given)
};

// Parses `cert_pem` (the leaf, then its intermediates) and `key_pem`, and checks
// them: certificates only in the certificate field, a private key in the key
// field, the chain in order (each certificate issued by the next), the key
// matches the leaf, the leaf names at least one DNS name, and, when now > 0,
// that the leaf is not expired at `now` (unix seconds). Errors name the field:
// "cert: the certificate expired on 2026-01-01 00:00:00 UTC".
bool parse_cert(std::string_view cert_pem, std::string_view key_pem, int64_t now, Cert* out, std::string* error);

// A store record (cert:<name>, store/keys.h): JSON {"name", "cert", "key", ...}.
// Parsed without the expiry check: an expired certificate keeps serving until a
// new one replaces it (pxadmind refuses expired uploads).
bool cert_from_record(std::string_view name, std::string_view json, Cert* out, std::string* error);

// The store record for a checked certificate (what cert_from_record reads):
// the PEM as given, and what pxctl cert list shows without parsing again.
std::string cert_record(const Cert& c, std::string_view cert_pem, std::string_view key_pem, std::string_view source);

// "2026-11-24 07:00:00 UTC"
std::string format_time(int64_t unix_seconds);

// Presents `c` (chain and key) on one connection, server or client side (mTLS). false: refused.
bool use_cert(SSL* ssl, const Cert& c);

// The certificates pxd serves, immutable once built (shared by every worker).
class CertTable {
 public:
  void add(std::shared_ptr<const Cert> c);
  // The certificate for handshakes whose name matches nothing ("" = none).
  void set_default(const std::string& name) { default_name_ = name; }
  // Exact name, then a wildcard one label deep, then the default. nullptr: none.
  // *matched says whether the name matched (false: the default was used).
  const Cert* select(std::string_view sni, bool ecdsa_ok, bool* matched) const;
  size_t size() const { return all_.size(); }
  const Cert* by_name(std::string_view name) const {
    for (const auto& c : all_)
      if (c->name == name) return c.get();
    return nullptr;
  }
  const std::vector<std::shared_ptr<const Cert>>& all() const { return all_; }

 private:
  static const Cert* pick(const std::vector<const Cert*>& v, bool ecdsa_ok);
  std::unordered_map<std::string, std::vector<const Cert*>> exact_, wild_;
  std::vector<std::shared_ptr<const Cert>> all_;
  std::string default_name_;
};

// From a ClientHello: can the client verify an ECDSA P-256 signature?
bool client_takes_ecdsa(const SSL_CLIENT_HELLO* hello);

}  // namespace px::tls
