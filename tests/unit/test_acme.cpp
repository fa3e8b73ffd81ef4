// The ACME client's pure parts: base64url, ES256 signatures (checked with
// BoringSSL's verifier), key authorizations, CSRs, RFC 9773's certificate
// identifier (the RFC's own example), RFC 3339 times, URLs, Link headers, and
// DNS TXT messages.
#include <doctest/doctest.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <nlohmann/json.hpp>
#include <string>

#include "acme/dns.h"
#include "acme/jose.h"
#include "http/client.h"

using namespace px::acme;
using px::http::split_url;
using json = nlohmann::json;

TEST_CASE("acme: base64url") {
  CHECK(b64url("") == "");
  CHECK(b64url("\xfb\xff") == "-_8");
  CHECK(b64url("ab") == "YWI");
  std::string out;
  REQUIRE(b64url_decode("-_8", &out));
  CHECK(out == "\xfb\xff");
  CHECK_FALSE(b64url_decode("a+b", &out));  // the standard alphabet is not base64url
  CHECK_FALSE(b64url_decode("YWI=", &out));
}

TEST_CASE("acme: a JWS that BoringSSL verifies, with jwk then kid") {
  AccountKey k;
  std::string err;
  CHECK_FALSE(k.load("garbage", &err));
  CHECK(err.find("account key") == 0);
  REQUIRE(k.load(new_key_pem(), &err));
  json jwk = json::parse(k.jwk());
  CHECK(jwk["kty"] == "EC");
  CHECK(jwk["crv"] == "P-256");
  // RFC 7638: the thumbprint hashes exactly these members, in this order, without spaces.
  CHECK(k.jwk().rfind("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"", 0) == 0);
  CHECK(k.thumbprint().size() == 43);
  for (bool with_kid : {false, true}) {
    json j = json::parse(k.sign("https://ca/new-order", "nonce-1", with_kid ? "https://ca/acct/1" : "", "{\"a\":1}"));
    std::string prot, payload, sig;
    REQUIRE(b64url_decode(j["protected"].get<std::string>(), &prot));
    REQUIRE(b64url_decode(j["payload"].get<std::string>(), &payload));
    REQUIRE(b64url_decode(j["signature"].get<std::string>(), &sig));
    json p = json::parse(prot);
    CHECK(p["alg"] == "ES256");
    CHECK(p["nonce"] == "nonce-1");
    CHECK(p["url"] == "https://ca/new-order");
    CHECK(p.contains("kid") == with_kid);
    CHECK(p.contains("jwk") == !with_kid);
    CHECK(payload == "{\"a\":1}");
    REQUIRE(sig.size() == 64);
    std::string input = j["protected"].get<std::string>() + "." + j["payload"].get<std::string>();
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(input.data()), input.size(), md);
    bssl::UniquePtr<ECDSA_SIG> s(ECDSA_SIG_new());
    BN_bin2bn(reinterpret_cast<const uint8_t*>(sig.data()), 32, s->r);
    BN_bin2bn(reinterpret_cast<const uint8_t*>(sig.data()) + 32, 32, s->s);
    CHECK(ECDSA_do_verify(md, sizeof md, s.get(), EVP_PKEY_get0_EC_KEY(k.pkey())) == 1);
    md[0] ^= 1;
    CHECK(ECDSA_do_verify(md, sizeof md, s.get(), EVP_PKEY_get0_EC_KEY(k.pkey())) == 0);
  }
  // POST-as-GET: an empty payload.
  json g = json::parse(k.sign("https://ca/order/1", "n", "https://ca/acct/1", ""));
  CHECK(g["payload"] == "");
  std::string ka = key_authorization("tok", k);
  CHECK(ka == "tok." + k.thumbprint());
  CHECK(dns01_value(ka).size() == 43);
}

TEST_CASE("acme: a CSR names every identifier and is signed by the certificate key") {
  std::string key = new_key_pem(), der, err;
  REQUIRE(make_csr({"shop.test", "*.shop.test"}, key, &der, &err));
  const uint8_t* p = reinterpret_cast<const uint8_t*>(der.data());
  bssl::UniquePtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  REQUIRE(req);
  bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
  CHECK(X509_REQ_verify(req.get(), pub.get()) == 1);
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(X509_REQ_get_extensions(req.get()));
  REQUIRE(exts);
  bssl::UniquePtr<GENERAL_NAMES> gens(
      static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts.get(), NID_subject_alt_name, nullptr, nullptr)));
  REQUIRE(gens);
  REQUIRE(sk_GENERAL_NAME_num(gens.get()) == 2);
  const GENERAL_NAME* g1 = sk_GENERAL_NAME_value(gens.get(), 1);
  CHECK(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g1->d.dNSName)),
                    static_cast<size_t>(ASN1_STRING_length(g1->d.dNSName))) == "*.shop.test");
  CHECK_FALSE(make_csr({}, key, &der, &err));
  CHECK_FALSE(make_csr({"a.test"}, "not a key", &der, &err));
}

TEST_CASE("acme: RFC 9773's certificate identifier (the RFC's example)") {
  // AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 0x87654321 (DER 00 87 65 43 21).
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  REQUIRE(EC_KEY_generate_key(ec.get()));
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  EVP_PKEY_set1_EC_KEY(key.get(), ec.get());
  bssl::UniquePtr<X509> x(X509_new());
  X509_set_version(x.get(), X509_VERSION_3);
  bssl::UniquePtr<BIGNUM> serial(BN_new());
  BN_set_word(serial.get(), 0x87654321);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x.get()));
  X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), key.get());
  static const uint8_t kid[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
  bssl::UniquePtr<AUTHORITY_KEYID> aki(AUTHORITY_KEYID_new());
  aki->keyid = ASN1_OCTET_STRING_new();
  ASN1_OCTET_STRING_set(aki->keyid, kid, sizeof kid);
  X509_add1_ext_i2d(x.get(), NID_authority_key_identifier, aki.get(), 0, 0);
  REQUIRE(X509_sign(x.get(), key.get(), EVP_sha256()));
  bssl::UniquePtr<BIO> b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(b.get(), x.get());
  const uint8_t* p;
  size_t n;
  BIO_mem_contents(b.get(), &p, &n);
  CHECK(ari_cert_id(std::string(reinterpret_cast<const char*>(p), n)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
  CHECK(ari_cert_id("not a certificate") == "");
}

TEST_CASE("acme: RFC 3339 times") {
  int64_t t;
  REQUIRE(parse_rfc3339("2025-01-02T04:00:00Z", &t));
  CHECK(t == 1735790400);
  REQUIRE(parse_rfc3339("2025-01-02T04:00:00.123456Z", &t));
  CHECK(t == 1735790400);
  REQUIRE(parse_rfc3339("2025-01-02T06:00:00+02:00", &t));
  CHECK(t == 1735790400);
  CHECK_FALSE(parse_rfc3339("2025-01-02", &t));
  CHECK_FALSE(parse_rfc3339("2025-13-02T04:00:00Z", &t));
  CHECK_FALSE(parse_rfc3339("2025-01-02T04:00:00Zjunk", &t));
}

TEST_CASE("acme: URLs and Link headers") {
  bool tls;
  std::string host, target;
  uint16_t port;
  REQUIRE(split_url("https://127.0.0.1:14000/dir", &tls, &host, &port, &target));
  CHECK((tls && host == "127.0.0.1" && port == 14000 && target == "/dir"));
  REQUIRE(split_url("http://[::1]/x?y", &tls, &host, &port, &target));
  CHECK((!tls && host == "::1" && port == 80 && target == "/x?y"));
  REQUIRE(split_url("https://acme.test", &tls, &host, &port, &target));
  CHECK((port == 443 && target == "/"));
  CHECK_FALSE(split_url("ftp://a/", &tls, &host, &port, &target));
  CHECK_FALSE(split_url("https://user@a/", &tls, &host, &port, &target));
  CHECK_FALSE(split_url("https://a:99999/", &tls, &host, &port, &target));
  px::http::ClientResponse r;
  r.headers = {{"link", "<https://ca/dir>;rel=\"index\""},
               {"link", "<https://ca/alt/1>; rel=\"alternate\", <x>;rel=up"}};
  CHECK(r.links("index") == std::vector<std::string>{"https://ca/dir"});
  CHECK(r.links("alternate") == std::vector<std::string>{"https://ca/alt/1"});
  CHECK(r.links("up") == std::vector<std::string>{"x"});
}

TEST_CASE("acme: DNS TXT query and answer") {
  std::string q = build_txt_query(0x1234, "_acme-challenge.a.test.");
  CHECK(q.size() == 12 + 1 + 15 + 1 + 1 + 1 + 4 + 1 + 4);
  CHECK(q.substr(12, 16) == std::string("\x0f_acme-challenge", 16));
  // An answer: the question, then a TXT record (two strings) by compression pointer.
  std::string a = q;
  a[2] = static_cast<char>(0x81);
  a[3] = static_cast<char>(0x80);
  a[7] = 1;  // ANCOUNT 1
  a += std::string("\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x3c", 10);
  std::string rdata = std::string("\x03") + "abc" + "\x02" + "de";
  a.push_back('\0');
  a.push_back(static_cast<char>(rdata.size()));
  a += rdata;
  std::vector<std::string> v;
  std::string err;
  REQUIRE(parse_txt_answer(a, 0x1234, &v, &err));
  CHECK(v == std::vector<std::string>{"abcde"});
  v.clear();
  CHECK_FALSE(parse_txt_answer(a, 0x9999, &v, &err));  // someone else's answer
  CHECK_FALSE(parse_txt_answer(a.substr(0, a.size() - 2), 0x1234, &v, &err));
  CHECK(err == "a malformed DNS answer");
  std::string nx = q;
  nx[2] = static_cast<char>(0x81);
  nx[3] = static_cast<char>(0x83);  // NXDOMAIN: no records yet
  v.clear();
  CHECK(parse_txt_answer(nx, 0x1234, &v, &err));
  CHECK(v.empty());
}
