#include "tls/cert.h"

#include <openssl/base64.h>

#include <openssl/bytestring.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/strings.h"

namespace px::tls {

namespace {
bool fail(std::string* error, const std::string& msg) {
  *error = msg;
  return false;
}

int64_t to_unix(const ASN1_TIME* t) {
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0, secs = 0;
  if (!epoch || !ASN1_TIME_diff(&days, &secs, epoch.get(), t)) return 0;
  return static_cast<int64_t>(days) * 86400 + secs;
}

std::string name_text(X509_NAME* n) {
  int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
  if (i >= 0) {
    ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
    const unsigned char* p = ASN1_STRING_get0_data(s);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(ASN1_STRING_length(s)));
  }
  char buf[256];
  X509_NAME_oneline(n, buf, sizeof buf);
  return buf;
}

// The PEM blocks' labels, in order ("CERTIFICATE", "PRIVATE KEY", ...).
std::vector<std::string> pem_labels(std::string_view pem) {
  std::vector<std::string> out;
  size_t p = 0;
  while ((p = pem.find("-----BEGIN ", p)) != std::string_view::npos) {
    p += 11;
    size_t e = pem.find("-----", p);
    if (e == std::string_view::npos) break;
    out.emplace_back(pem.substr(p, e - p));
    p = e + 5;
  }
  return out;
}

void dns_names(X509* x, std::vector<std::string>* out) {
  bssl::UniquePtr<GENERAL_NAMES> sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  if (sans) {
    for (size_t i = 0; i < sk_GENERAL_NAME_num(sans.get()); i++) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans.get(), i);
      if (g->type != GEN_DNS) continue;
      const unsigned char* p = ASN1_STRING_get0_data(g->d.dNSName);
      std::string n(reinterpret_cast<const char*>(p), static_cast<size_t>(ASN1_STRING_length(g->d.dNSName)));
      out->push_back(to_lower(n));
    }
  }
  // No fallback to the common name: clients ignore it (RFC 6125, and browsers since 2017).
}
}  // namespace

std::string format_time(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  tm g{};
  gmtime_r(&tt, &g);
  char b[64];
  strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", &g);
  return b;
}

bool parse_cert(std::string_view cert_pem, std::string_view key_pem, int64_t now, Cert* out, std::string* error) {
  // What each field holds, before parsing: the most common mistakes are a key
  // pasted as the certificate, or the two swapped.
  std::vector<std::string> cl = pem_labels(cert_pem), kl = pem_labels(key_pem);
  if (cl.empty()) return fail(error, "cert: no PEM certificate found");
  for (const auto& l : cl)
    if (l != "CERTIFICATE")
      return fail(error, "cert: holds a '" + l + "' block; only certificates belong here (the key goes in key)");
  if (kl.empty()) return fail(error, "key: no PEM private key found");
  if (kl.size() > 1)
    return fail(error, "key: holds " + std::to_string(kl.size()) + " PEM blocks; give one private key");
  if (kl[0].find("PRIVATE KEY") == std::string::npos)
    return fail(error, "key: holds a '" + kl[0] + "' block, not a private key");

  std::vector<bssl::UniquePtr<X509>> xs;
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  while (true) {
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (!x) break;
    xs.emplace_back(x);
  }
  ERR_clear_error();
  if (xs.size() != cl.size())
    return fail(error, "cert: certificate " + std::to_string(xs.size() + 1) + " of " + std::to_string(cl.size()) +
                           " is not valid PEM/DER");
  bssl::UniquePtr<BIO> kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return fail(error, "key: not a valid (unencrypted) PEM private key");
  int kt = EVP_PKEY_id(key.get());
  if (kt != EVP_PKEY_EC && kt != EVP_PKEY_RSA) return fail(error, "key: only ECDSA and RSA keys are supported");
  for (size_t i = 0; i + 1 < xs.size(); i++)
    if (X509_check_issued(xs[i + 1].get(), xs[i].get()) != X509_V_OK)
      return fail(error, "cert: the chain is out of order: certificate " + std::to_string(i + 2) +
                             " did not issue certificate " + std::to_string(i + 1) +
                             " (give the leaf first, then each issuer)");
  X509* leaf = xs[0].get();
  if (!X509_check_private_key(leaf, key.get())) {
    ERR_clear_error();
    return fail(error, "key: does not match the certificate (the first one in cert)");
  }
  Cert c;
  dns_names(leaf, &c.names);
  if (c.names.empty()) return fail(error, "cert: the certificate names no DNS name (subjectAltName)");
  c.not_before = to_unix(X509_get0_notBefore(leaf));
  c.not_after = to_unix(X509_get0_notAfter(leaf));
  if (now > 0 && c.not_after <= now) return fail(error, "cert: the certificate expired on " + format_time(c.not_after));
  c.issuer = name_text(X509_get_issuer_name(leaf));
  if (const ASN1_INTEGER* sn = X509_get0_serialNumber(leaf)) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < sn->length; i++) {
      c.serial.push_back(hex[sn->data[i] >> 4]);
      c.serial.push_back(hex[sn->data[i] & 15]);
    }
  }
  c.ecdsa = kt == EVP_PKEY_EC;
  for (auto& x : xs) {
    uint8_t* der = nullptr;
    int n = i2d_X509(x.get(), &der);
    if (n <= 0) return fail(error, "cert: cannot encode a certificate");
    c.chain.emplace_back(CRYPTO_BUFFER_new(der, static_cast<size_t>(n), nullptr));
    OPENSSL_free(der);
  }
  c.key = std::move(key);
  c.name = out->name;
  *out = std::move(c);
  return true;
}

bool cert_from_record(std::string_view name, std::string_view json, Cert* out, std::string* error) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(error, "not a JSON object");
  auto cert = j.find("cert");
  auto key = j.find("key");
  if (cert == j.end() || !cert->is_string()) return fail(error, "cert: missing");
  if (key == j.end() || !key->is_string()) return fail(error, "key: missing");
  out->name = std::string(name);
  if (!parse_cert(cert->get<std::string>(), key->get<std::string>(), 0, out, error)) return false;
  // A stapled OCSP response pxadmind fetched (base64 DER), while current.
  auto ocsp = j.find("ocsp");
  if (ocsp != j.end() && ocsp->is_string()) {
    const std::string& b64 = ocsp->get_ref<const std::string&>();
    size_t n = 0;
    if (EVP_DecodedLength(&n, b64.size())) {
      out->ocsp.resize(n);
      if (EVP_DecodeBase64(reinterpret_cast<uint8_t*>(out->ocsp.data()), &n, n,
                           reinterpret_cast<const uint8_t*>(b64.data()), b64.size()))
        out->ocsp.resize(n);
      else
        out->ocsp.clear();
    }
    out->ocsp_next_update = j.value("ocsp_next_update", int64_t(0));
  }
  return true;
}

std::string cert_record(const Cert& c, std::string_view cert_pem, std::string_view key_pem, std::string_view source) {
  nlohmann::json j;
  j["name"] = c.name;
  j["source"] = source;
  j["names"] = c.names;
  j["issuer"] = c.issuer;
  j["serial"] = c.serial;
  j["key_type"] = c.ecdsa ? "ecdsa" : "rsa";
  j["not_before"] = c.not_before;
  j["not_after"] = c.not_after;
  j["cert"] = cert_pem;
  j["key"] = key_pem;
  return j.dump();
}

bool use_cert(SSL* ssl, const Cert& c) {
  CRYPTO_BUFFER* bufs[16];
  size_t n = c.chain.size() < 16 ? c.chain.size() : 16;
  for (size_t i = 0; i < n; i++) bufs[i] = c.chain[i].get();
  if (SSL_set_chain_and_key(ssl, bufs, n, c.key.get(), nullptr) != 1) return false;
  // OCSP stapling: BoringSSL sends it only to clients that asked (status_request).
  if (!c.ocsp.empty() && SSL_is_server(ssl) && (c.ocsp_next_update == 0 || time(nullptr) < c.ocsp_next_update))
    SSL_set_ocsp_response(ssl, reinterpret_cast<const uint8_t*>(c.ocsp.data()), c.ocsp.size());
  return true;
}

void CertTable::add(std::shared_ptr<const Cert> c) {
  for (const auto& n : c->names) {
    if (n.size() > 2 && n[0] == '*' && n[1] == '.')
      wild_[n.substr(2)].push_back(c.get());
    else
      exact_[n].push_back(c.get());
  }
  all_.push_back(std::move(c));
}

const Cert* CertTable::pick(const std::vector<const Cert*>& v, bool ecdsa_ok) {
  const Cert* best = nullptr;
  for (const Cert* c : v) {
    if (c->ecdsa && !ecdsa_ok) continue;
    if (!best || (c->ecdsa && !best->ecdsa) || (c->ecdsa == best->ecdsa && c->not_after > best->not_after)) best = c;
  }
  // A client that takes no ECDSA and a name with only ECDSA: offer it anyway (the handshake will say no).
  return best ? best : (v.empty() ? nullptr : v[0]);
}

const Cert* CertTable::select(std::string_view sni, bool ecdsa_ok, bool* matched) const {
  *matched = false;
  if (!sni.empty()) {
    std::string key = to_lower(sni);
    if (!key.empty() && key.back() == '.') key.pop_back();
    auto it = exact_.find(key);
    if (it != exact_.end()) {
      *matched = true;
      return pick(it->second, ecdsa_ok);
    }
    size_t dot = key.find('.');
    if (dot != std::string::npos) {
      auto w = wild_.find(key.substr(dot + 1));
      if (w != wild_.end()) {
        *matched = true;
        return pick(w->second, ecdsa_ok);
      }
    }
  }
  if (default_name_.empty()) return nullptr;
  std::vector<const Cert*> defaults;
  for (const auto& c : all_)
    if (c->name == default_name_) defaults.push_back(c.get());
  return defaults.empty() ? nullptr : pick(defaults, ecdsa_ok);
}

bool client_takes_ecdsa(const SSL_CLIENT_HELLO* hello) {
  const uint8_t* data;
  size_t len;
  if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_signature_algorithms, &data, &len)) return false;
  CBS ext, algs;
  CBS_init(&ext, data, len);
  if (!CBS_get_u16_length_prefixed(&ext, &algs)) return false;
  bool p256 = false;
  uint16_t a;
  while (CBS_get_u16(&algs, &a))
    if (a == SSL_SIGN_ECDSA_SECP256R1_SHA256) p256 = true;
  if (!p256) return false;
  // TLS 1.3 signs with any algorithm the client lists; TLS 1.2 also needs an ECDSA cipher suite.
  if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_supported_versions, &data, &len)) {
    CBS sv, vers;
    CBS_init(&sv, data, len);
    uint16_t v;
    if (CBS_get_u8_length_prefixed(&sv, &vers))
      while (CBS_get_u16(&vers, &v))
        if (v == TLS1_3_VERSION) return true;
  }
  CBS suites;
  CBS_init(&suites, hello->cipher_suites, hello->cipher_suites_len);
  uint16_t s;
  while (CBS_get_u16(&suites, &s)) {
    const SSL_CIPHER* c = SSL_get_cipher_by_value(s);
    if (c && SSL_CIPHER_get_auth_nid(c) == NID_auth_ecdsa) return true;
  }
  return false;
}

}  // namespace px::tls
