#include "tls/ocsp.h"

#include <openssl/bytestring.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <vector>

namespace px::tls {

namespace {

std::vector<bssl::UniquePtr<X509>> read_chain(std::string_view pem) {
  std::vector<bssl::UniquePtr<X509>> out;
  bssl::UniquePtr<BIO> b(BIO_new_mem_buf(pem.data(), static_cast<long>(pem.size())));
  while (X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();
  return out;
}

// The serial's INTEGER content octets.
std::string serial_content(const X509* x) {
  uint8_t* der = nullptr;
  int n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &der);
  std::string s;
  CBS cbs, body;
  if (n > 0) {
    CBS_init(&cbs, der, static_cast<size_t>(n));
    if (CBS_get_asn1(&cbs, &body, CBS_ASN1_INTEGER))
      s.assign(reinterpret_cast<const char*>(CBS_data(&body)), CBS_len(&body));
  }
  OPENSSL_free(der);
  return s;
}

// "YYYYMMDDHHMMSS[.f]Z"
bool generalized_time(CBS* t, int64_t* out) {
  std::string s(reinterpret_cast<const char*>(CBS_data(t)), CBS_len(t));
  if (s.size() < 15 || s.back() != 'Z') return false;
  tm v{};
  if (std::sscanf(s.c_str(), "%4d%2d%2d%2d%2d%2d", &v.tm_year, &v.tm_mon, &v.tm_mday, &v.tm_hour, &v.tm_min,
                  &v.tm_sec) != 6)
    return false;
  v.tm_year -= 1900;
  v.tm_mon -= 1;
  *out = static_cast<int64_t>(timegm(&v));
  return true;
}

}  // namespace

std::string ocsp_url(std::string_view chain_pem) {
  auto chain = read_chain(chain_pem);
  if (chain.empty()) return "";
  bssl::UniquePtr<AUTHORITY_INFO_ACCESS> aia(
      static_cast<AUTHORITY_INFO_ACCESS*>(X509_get_ext_d2i(chain[0].get(), NID_info_access, nullptr, nullptr)));
  if (!aia) return "";
  for (size_t i = 0; i < sk_ACCESS_DESCRIPTION_num(aia.get()); i++) {
    const ACCESS_DESCRIPTION* ad = sk_ACCESS_DESCRIPTION_value(aia.get(), i);
    if (OBJ_obj2nid(ad->method) == NID_ad_OCSP && ad->location->type == GEN_URI) {
      const ASN1_IA5STRING* u = ad->location->d.uniformResourceIdentifier;
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(u)),
                         static_cast<size_t>(ASN1_STRING_length(u)));
    }
  }
  return "";
}

bool ocsp_request(std::string_view chain_pem, std::string* der, std::string* error) {
  auto chain = read_chain(chain_pem);
  if (chain.size() < 2) {
    *error = "the chain has no issuer certificate";
    return false;
  }
  const X509* leaf = chain[0].get();
  const X509* issuer = chain[1].get();
  // CertID: SHA-1 of the issuer's name (DER) and of its public key's bits.
  uint8_t* name_der = nullptr;
  int name_len = i2d_X509_NAME(X509_get_issuer_name(leaf), &name_der);
  if (name_len <= 0) {
    *error = "the leaf's issuer name cannot be encoded";
    return false;
  }
  uint8_t name_hash[SHA_DIGEST_LENGTH], key_hash[SHA_DIGEST_LENGTH];
  SHA1(name_der, static_cast<size_t>(name_len), name_hash);
  OPENSSL_free(name_der);
  const ASN1_BIT_STRING* key = X509_get0_pubkey_bitstr(issuer);
  SHA1(ASN1_STRING_get0_data(key), static_cast<size_t>(ASN1_STRING_length(key)), key_hash);
  std::string serial = serial_content(leaf);
  static const uint8_t kSha1[] = {0x2b, 0x0e, 0x03, 0x02, 0x1a};  // 1.3.14.3.2.26
  bssl::ScopedCBB cbb;
  CBB req, tbs, list, one, certid, alg, oid, null, v;
  uint8_t* out = nullptr;
  size_t out_len = 0;
  if (!CBB_init(cbb.get(), 128) || !CBB_add_asn1(cbb.get(), &req, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1(&req, &tbs, CBS_ASN1_SEQUENCE) || !CBB_add_asn1(&tbs, &list, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1(&list, &one, CBS_ASN1_SEQUENCE) || !CBB_add_asn1(&one, &certid, CBS_ASN1_SEQUENCE) ||
      !CBB_add_asn1(&certid, &alg, CBS_ASN1_SEQUENCE) || !CBB_add_asn1(&alg, &oid, CBS_ASN1_OBJECT) ||
      !CBB_add_bytes(&oid, kSha1, sizeof kSha1) || !CBB_add_asn1(&alg, &null, CBS_ASN1_NULL) ||
      !CBB_add_asn1(&certid, &v, CBS_ASN1_OCTETSTRING) || !CBB_add_bytes(&v, name_hash, sizeof name_hash) ||
      !CBB_add_asn1(&certid, &v, CBS_ASN1_OCTETSTRING) || !CBB_add_bytes(&v, key_hash, sizeof key_hash) ||
      !CBB_add_asn1(&certid, &v, CBS_ASN1_INTEGER) ||
      !CBB_add_bytes(&v, reinterpret_cast<const uint8_t*>(serial.data()), serial.size()) ||
      !CBB_finish(cbb.get(), &out, &out_len)) {
    *error = "the OCSP request cannot be encoded";
    return false;
  }
  der->assign(reinterpret_cast<char*>(out), out_len);
  OPENSSL_free(out);
  return true;
}

bool ocsp_check(std::string_view response_der, std::string_view chain_pem, int64_t now, OcspStatus* st,
                std::string* error) {
  auto chain = read_chain(chain_pem);
  if (chain.empty()) {
    *error = "no certificate";
    return false;
  }
  std::string serial = serial_content(chain[0].get());
  CBS in, resp, status, bytes, bytes_seq, type, basic_os, basic, tbs, responses;
  CBS_init(&in, reinterpret_cast<const uint8_t*>(response_der.data()), response_der.size());
  uint64_t code;
  if (!CBS_get_asn1(&in, &resp, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&resp, &status, CBS_ASN1_ENUMERATED) ||
      CBS_len(&status) != 1) {
    *error = "not an OCSP response";
    return false;
  }
  code = CBS_data(&status)[0];
  if (code != 0) {
    static const char* names[] = {"successful", "malformedRequest", "internalError", "tryLater",
                                  "4",          "sigRequired",      "unauthorized"};
    *error = std::string("the responder answered ") + (code < 7 ? names[code] : "an unknown status");
    return false;
  }
  static const uint8_t kBasic[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};  // id-pkix-ocsp-basic
  if (!CBS_get_asn1(&resp, &bytes, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) ||
      !CBS_get_asn1(&bytes, &bytes_seq, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&bytes_seq, &type, CBS_ASN1_OBJECT) ||
      !CBS_mem_equal(&type, kBasic, sizeof kBasic) || !CBS_get_asn1(&bytes_seq, &basic_os, CBS_ASN1_OCTETSTRING) ||
      !CBS_get_asn1(&basic_os, &basic, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&basic, &tbs, CBS_ASN1_SEQUENCE)) {
    *error = "not a basic OCSP response";
    return false;
  }
  // tbsResponseData: [0] version?, responderID ([1] or [2]), producedAt, responses, [1] extensions?
  CBS skip;
  if (CBS_peek_asn1_tag(&tbs, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) &&
      !CBS_get_any_asn1(&tbs, &skip, nullptr))
    goto bad;
  if (!CBS_get_any_asn1(&tbs, &skip, nullptr) || !CBS_get_any_asn1(&tbs, &skip, nullptr) ||
      !CBS_get_asn1(&tbs, &responses, CBS_ASN1_SEQUENCE))
    goto bad;
  while (CBS_len(&responses)) {
    CBS single, certid, alg, hash, ser, cstatus, t;
    if (!CBS_get_asn1(&responses, &single, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&single, &certid, CBS_ASN1_SEQUENCE) ||
        !CBS_get_asn1(&certid, &alg, CBS_ASN1_SEQUENCE) || !CBS_get_asn1(&certid, &hash, CBS_ASN1_OCTETSTRING) ||
        !CBS_get_asn1(&certid, &hash, CBS_ASN1_OCTETSTRING) || !CBS_get_asn1(&certid, &ser, CBS_ASN1_INTEGER))
      goto bad;
    if (!CBS_mem_equal(&ser, reinterpret_cast<const uint8_t*>(serial.data()), serial.size())) continue;
    unsigned tag;
    if (!CBS_get_any_asn1(&single, &cstatus, &tag)) goto bad;
    if (tag == (CBS_ASN1_CONTEXT_SPECIFIC | 1)) tag |= CBS_ASN1_CONSTRUCTED;
    if (tag != (CBS_ASN1_CONTEXT_SPECIFIC | 0)) {
      *error = (tag & 0x1f) == 1 ? "the certificate is revoked" : "the responder does not know the certificate";
      return false;
    }
    if (!CBS_get_asn1(&single, &t, CBS_ASN1_GENERALIZEDTIME) || !generalized_time(&t, &st->this_update)) goto bad;
    st->next_update = 0;
    CBS nu;
    if (CBS_peek_asn1_tag(&single, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0)) {
      if (!CBS_get_asn1(&single, &nu, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) ||
          !CBS_get_asn1(&nu, &t, CBS_ASN1_GENERALIZEDTIME) || !generalized_time(&t, &st->next_update))
        goto bad;
    }
    if (st->this_update > now + 300) {
      *error = "the response is from the future (thisUpdate)";
      return false;
    }
    if (st->next_update && st->next_update <= now) {
      *error = "the response has expired (nextUpdate)";
      return false;
    }
    return true;
  }
  *error = "the response does not cover this certificate";
  return false;
bad:
  *error = "a malformed OCSP response";
  return false;
}

}  // namespace px::tls
