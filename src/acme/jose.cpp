#include "acme/jose.h"

#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>

namespace px::acme {

std::string b64url(std::string_view in) {
  size_t n = 0;
  EVP_EncodedLength(&n, in.size());
  std::string out(n, '\0');
  size_t w =
      EVP_EncodeBlock(reinterpret_cast<uint8_t*>(out.data()), reinterpret_cast<const uint8_t*>(in.data()), in.size());
  out.resize(w);
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

bool b64url_decode(std::string_view text, std::string* out) {
  std::string s(text);
  for (char& c : s) {
    if (c == '-')
      c = '+';
    else if (c == '_')
      c = '/';
    else if (c == '+' || c == '/' || c == '=')
      return false;
  }
  while (s.size() % 4) s.push_back('=');
  size_t n = 0;
  if (!EVP_DecodedLength(&n, s.size())) return false;
  out->assign(n, '\0');
  if (!EVP_DecodeBase64(reinterpret_cast<uint8_t*>(out->data()), &n, n, reinterpret_cast<const uint8_t*>(s.data()),
                        s.size()))
    return false;
  out->resize(n);
  return true;
}

namespace {

std::string pem_of(EVP_PKEY* k) {
  bssl::UniquePtr<BIO> b(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
  const uint8_t* p;
  size_t n;
  BIO_mem_contents(b.get(), &p, &n);
  return std::string(reinterpret_cast<const char*>(p), n);
}

bssl::UniquePtr<EVP_PKEY> read_key(std::string_view pem) {
  bssl::UniquePtr<BIO> b(BIO_new_mem_buf(pem.data(), static_cast<long>(pem.size())));
  return bssl::UniquePtr<EVP_PKEY>(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
}

std::string sha256(std::string_view s) {
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(s.data()), s.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

// JSON string literal for the few values we embed (URLs, nonces, base64url): escape " and \.
std::string jstr(std::string_view s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o.push_back('\\');
    o.push_back(c);
  }
  o.push_back('"');
  return o;
}

}  // namespace

std::string new_key_pem() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  if (!ec || !EC_KEY_generate_key(ec.get())) return "";
  bssl::UniquePtr<EVP_PKEY> k(EVP_PKEY_new());
  EVP_PKEY_assign_EC_KEY(k.get(), ec.release());
  return pem_of(k.get());
}

bool AccountKey::load(std::string_view pem, std::string* error) {
  key_ = read_key(pem);
  if (!key_) {
    *error = "account key: not a PEM private key";
    return false;
  }
  const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key_.get());
  if (!ec || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1) {
    *error = "account key: not an ECDSA P-256 key";
    key_.reset();
    return false;
  }
  return true;
}

std::string AccountKey::jwk() const {
  const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key_.get());
  uint8_t pt[65];
  EC_POINT_point2oct(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec), POINT_CONVERSION_UNCOMPRESSED, pt, sizeof pt,
                     nullptr);
  std::string x(reinterpret_cast<char*>(pt + 1), 32), y(reinterpret_cast<char*>(pt + 33), 32);
  return "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"" + b64url(x) + "\",\"y\":\"" + b64url(y) + "\"}";
}

std::string AccountKey::thumbprint() const { return b64url(sha256(jwk())); }

std::string AccountKey::sign(std::string_view url, std::string_view nonce, std::string_view kid,
                             std::string_view payload) const {
  std::string prot = "{\"alg\":\"ES256\",";
  if (kid.empty())
    prot += "\"jwk\":" + jwk();
  else
    prot += "\"kid\":" + jstr(kid);
  if (!nonce.empty()) prot += ",\"nonce\":" + jstr(nonce);
  prot += ",\"url\":" + jstr(url) + "}";
  std::string p64 = b64url(prot), pl64 = b64url(payload);
  std::string digest = sha256(p64 + "." + pl64);
  bssl::UniquePtr<ECDSA_SIG> sig(
      ECDSA_do_sign(reinterpret_cast<const uint8_t*>(digest.data()), digest.size(), EVP_PKEY_get0_EC_KEY(key_.get())));
  uint8_t rs[64];
  BN_bn2bin_padded(rs, 32, sig->r);
  BN_bn2bin_padded(rs + 32, 32, sig->s);
  return "{\"protected\":\"" + p64 + "\",\"payload\":\"" + pl64 + "\",\"signature\":\"" +
         b64url(std::string_view(reinterpret_cast<char*>(rs), 64)) + "\"}";
}

std::string key_authorization(std::string_view token, const AccountKey& k) {
  return std::string(token) + "." + k.thumbprint();
}

std::string dns01_value(std::string_view ka) { return b64url(sha256(ka)); }

bool make_csr(const std::vector<std::string>& names, std::string_view key_pem, std::string* der, std::string* error) {
  bssl::UniquePtr<EVP_PKEY> key = read_key(key_pem);
  if (!key || names.empty()) {
    *error = "csr: no key or no names";
    return false;
  }
  bssl::UniquePtr<X509_REQ> req(X509_REQ_new());
  X509_REQ_set_version(req.get(), X509_REQ_VERSION_1);
  X509_NAME* subj = X509_REQ_get_subject_name(req.get());
  if (names[0].size() <= 64)
    X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8, reinterpret_cast<const uint8_t*>(names[0].data()),
                               static_cast<int>(names[0].size()), -1, 0);
  bssl::UniquePtr<GENERAL_NAMES> gens(sk_GENERAL_NAME_new_null());
  for (const auto& n : names) {
    GENERAL_NAME* g = GENERAL_NAME_new();
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    ASN1_STRING_set(s, n.data(), static_cast<int>(n.size()));
    GENERAL_NAME_set0_value(g, GEN_DNS, s);
    sk_GENERAL_NAME_push(gens.get(), g);
  }
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  STACK_OF(X509_EXTENSION)* ep = exts.get();
  if (X509V3_add1_i2d(&ep, NID_subject_alt_name, gens.get(), 0, 0) != 1 ||
      !X509_REQ_add_extensions(req.get(), exts.get()) || !X509_REQ_set_pubkey(req.get(), key.get()) ||
      !X509_REQ_sign(req.get(), key.get(), EVP_sha256())) {
    *error = "csr: could not be built";
    return false;
  }
  uint8_t* out = nullptr;
  int n = i2d_X509_REQ(req.get(), &out);
  if (n <= 0) {
    *error = "csr: could not be encoded";
    return false;
  }
  der->assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  OPENSSL_free(out);
  return true;
}

std::string ari_cert_id(std::string_view leaf_pem) {
  bssl::UniquePtr<BIO> b(BIO_new_mem_buf(leaf_pem.data(), static_cast<long>(leaf_pem.size())));
  bssl::UniquePtr<X509> x(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!x) return "";
  bssl::UniquePtr<AUTHORITY_KEYID> aki(
      static_cast<AUTHORITY_KEYID*>(X509_get_ext_d2i(x.get(), NID_authority_key_identifier, nullptr, nullptr)));
  if (!aki || !aki->keyid) return "";
  std::string kid(reinterpret_cast<const char*>(ASN1_STRING_get0_data(aki->keyid)),
                  static_cast<size_t>(ASN1_STRING_length(aki->keyid)));
  // The serial's DER content octets: the INTEGER without its tag and length.
  uint8_t* der = nullptr;
  int n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x.get()), &der);
  if (n <= 0) return "";
  CBS cbs, body;
  CBS_init(&cbs, der, static_cast<size_t>(n));
  std::string serial;
  if (CBS_get_asn1(&cbs, &body, CBS_ASN1_INTEGER))
    serial.assign(reinterpret_cast<const char*>(CBS_data(&body)), CBS_len(&body));
  OPENSSL_free(der);
  if (serial.empty()) return "";
  return b64url(kid) + "." + b64url(serial);
}

bool parse_rfc3339(std::string_view s, int64_t* out) {
  int Y, M, D, h, m, sec;
  if (s.size() < 20 ||
      std::sscanf(std::string(s.substr(0, 19)).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &Y, &M, &D, &h, &m, &sec) != 6)
    return false;
  if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    i++;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') i++;
  }
  int64_t off = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh = (s[i + 1] - '0') * 10 + (s[i + 2] - '0'), om = (s[i + 4] - '0') * 10 + (s[i + 5] - '0');
    off = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return false;
  }
  if (i != s.size() || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return false;
  tm t{};
  t.tm_year = Y - 1900;
  t.tm_mon = M - 1;
  t.tm_mday = D;
  t.tm_hour = h;
  t.tm_min = m;
  t.tm_sec = sec;
  *out = static_cast<int64_t>(timegm(&t)) - off;
  return true;
}

}  // namespace px::acme
