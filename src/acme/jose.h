// px::acme JOSE and certificate helpers (RFC 7515/7517/7638, RFC 8555 6.2,
// RFC 9773 4.1): base64url, the account key (ECDSA P-256, ES256), signed
// request bodies, key authorizations, certificate signing requests, and the
// renewal-information identifier of a certificate. Pure code over BoringSSL;
// the unit tests check it against BoringSSL's own verification.
#pragma once
#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px::acme {

std::string b64url(std::string_view bytes);
bool b64url_decode(std::string_view text, std::string* out);

// A new ECDSA P-256 private key, as PEM (account keys and certificate keys).
std::string new_key_pem();

// An ES256 signing key (the ACME account key).
class AccountKey {
 public:
  bool load(std::string_view pem, std::string* error);
  // The public key as a JWK, members in the order RFC 7638 hashes them.
  std::string jwk() const;
  // RFC 7638 thumbprint, base64url.
  std::string thumbprint() const;
  // A flattened JWS (RFC 8555 6.2): protected = {alg, nonce, url, and kid or jwk};
  // payload "" is a POST-as-GET.
  std::string sign(std::string_view url, std::string_view nonce, std::string_view kid, std::string_view payload) const;
  EVP_PKEY* pkey() const { return key_.get(); }

 private:
  bssl::UniquePtr<EVP_PKEY> key_;
};

// token "." thumbprint (RFC 8555 8.1); the DNS-01 TXT value is b64url(sha256(that)).
std::string key_authorization(std::string_view token, const AccountKey& k);
std::string dns01_value(std::string_view key_authorization);

// A DER certificate signing request for `names` (subjectAltName, the first also as CN), signed by key_pem.
bool make_csr(const std::vector<std::string>& names, std::string_view key_pem, std::string* der, std::string* error);

// RFC 9773's certificate identifier: b64url(authority key id) "." b64url(serial, DER content octets).
// "" when the leaf has no authority key identifier.
std::string ari_cert_id(std::string_view leaf_pem);

// RFC 3339 ("2026-11-24T10:00:00Z", fractions and offsets allowed) → unix seconds; false when malformed.
bool parse_rfc3339(std::string_view s, int64_t* out);

}  // namespace px::acme
