// TLS without sockets: certificate choice (tls/cert.h), and a TlsTransport
// (tls/transport.h) over a fake inner transport, driven byte by byte against a
// BoringSSL client on memory BIOs.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <openssl/ec_key.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "http/client.h"
#include "tls/cert.h"
#include "tls/client_hello.h"
#include "tls/context.h"
#include "tls/transport.h"

using namespace px;

namespace {
// A self-signed certificate for `sans` ("DNS:a.test,DNS:*.b.test"), as PEM.
void make_pem(const char* sans, bool ecdsa, std::string* cert_pem, std::string* key_pem, long valid_s = 86400) {
  bssl::UniquePtr<EVP_PKEY> key(EVP_PKEY_new());
  if (ecdsa) {
    EC_KEY* ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    REQUIRE(EC_KEY_generate_key(ec));
    EVP_PKEY_assign_EC_KEY(key.get(), ec);
  } else {
    RSA* rsa = RSA_new();
    bssl::UniquePtr<BIGNUM> e(BN_new());
    BN_set_word(e.get(), RSA_F4);
    REQUIRE(RSA_generate_key_ex(rsa, 2048, e.get(), nullptr));
    EVP_PKEY_assign_RSA(key.get(), rsa);
  }
  bssl::UniquePtr<X509> x(X509_new());
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 7);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), valid_s);
  X509_set_pubkey(x.get(), key.get());
  X509_NAME* n = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>("px unit"), -1, -1, 0);
  X509_set_issuer_name(x.get(), n);
  if (sans) {
    X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, nullptr, NID_subject_alt_name, sans);
    REQUIRE(ext);
    X509_add_ext(x.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  REQUIRE(X509_sign(x.get(), key.get(), EVP_sha256()));
  bssl::UniquePtr<BIO> cb(BIO_new(BIO_s_mem())), kb(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cb.get(), x.get());
  PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  const uint8_t* p;
  size_t len;
  BIO_mem_contents(cb.get(), &p, &len);
  cert_pem->assign(reinterpret_cast<const char*>(p), len);
  BIO_mem_contents(kb.get(), &p, &len);
  key_pem->assign(reinterpret_cast<const char*>(p), len);
}

std::shared_ptr<const tls::Cert> make_cert(const char* name, const char* sans, bool ecdsa) {
  std::string c, k, err;
  make_pem(sans, ecdsa, &c, &k);
  auto out = std::make_shared<tls::Cert>();
  out->name = name;
  REQUIRE_MESSAGE(tls::parse_cert(c, k, time(nullptr), out.get(), &err), err);
  return out;
}

// The inner transport: collects what the TLS layer writes; the test feeds on_data itself.
struct FakeInner final : net::Transport {
  std::string written;
  bool closed = false;
  void read_start() override { reading_ = true; }
  void read_stop() override { reading_ = false; }
  int write(net::Output& out) override {
    for (size_t i = 0; i < out.count(); i++) written.append(out.data(i), out.len(i));
    out.clear();
    return 0;
  }
  size_t queued() const override { return 0; }
  void shutdown(bool) override {}
  void close() override { closed = true; }
};

struct Plain final : net::TransportUser {
  tls::TlsTransport* t = nullptr;
  std::string got;
  size_t stop_after = SIZE_MAX;  // read_stop() once this much arrived
  bool connected = false, eof = false, error = false;
  void on_data(const char* d, size_t n) override {
    got.append(d, n);
    if (got.size() >= stop_after) t->read_stop();
  }
  void on_eof() override { eof = true; }
  void on_error(int) override { error = true; }
  void on_drained() override {}
  void on_connected() override { connected = true; }
  void on_closed() override {}
};

// A BoringSSL client on memory BIOs, and a pxd server TlsTransport; bytes move by hand.
struct Pair {
  bssl::UniquePtr<SSL_CTX> sctx, cctx;
  tls::CertSource src;
  FakeInner inner;
  Plain user;
  std::unique_ptr<tls::TlsTransport> server;
  SSL* client;
  BIO *c_in, *c_out;  // ciphertext to the client, from the client
  Pair(const char* sni, std::shared_ptr<const tls::CertTable> certs) {
    std::string err;
    sctx = tls::make_server_ctx(tls::ServerOptions(), &err);
    REQUIRE(sctx);
    src.certs = std::move(certs);
    server = std::make_unique<tls::TlsTransport>(tls::new_server_ssl(sctx.get(), &src, false), &inner);
    server->set_user(&user);
    user.t = server.get();
    server->read_start();
    cctx.reset(SSL_CTX_new(TLS_method()));
    client = SSL_new(cctx.get());
    c_in = BIO_new(BIO_s_mem());
    c_out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c_in, -1);  // empty means "more later", not the end
    SSL_set_bio(client, c_in, c_out);
    SSL_set_connect_state(client);
    if (sni) SSL_set_tlsext_host_name(client, sni);
  }
  ~Pair() { SSL_free(client); }
  // Client bytes to the server in pieces of `step`; server bytes to the client.
  void pump(size_t step) {
    const uint8_t* p;
    size_t len;
    BIO_mem_contents(c_out, &p, &len);
    std::string out(reinterpret_cast<const char*>(p), len);
    BIO_reset(c_out);
    for (size_t i = 0; i < out.size(); i += step) server->on_data(out.data() + i, std::min(step, out.size() - i));
    if (!inner.written.empty()) {
      BIO_write(c_in, inner.written.data(), static_cast<int>(inner.written.size()));
      inner.written.clear();
    }
  }
  bool handshake(size_t step) {
    for (int i = 0; i < 20; i++) {
      int r = SSL_do_handshake(client);
      int e = r == 1 ? 0 : SSL_get_error(client, r);  // before pump(): writing to the BIO clears its retry flag
      pump(step);
      if (r == 1 && server->established()) return true;
      if (r != 1 && e != SSL_ERROR_WANT_READ) {
        MESSAGE("client: SSL error ", e, " at round ", i);
        return false;
      }
      if (user.error) {
        MESSAGE("server: ", std::string(server->failure()));
        return false;
      }
    }
    return false;
  }
};

std::shared_ptr<const tls::CertTable> table_with(std::initializer_list<std::shared_ptr<const tls::Cert>> certs,
                                                 const char* default_name = "") {
  auto t = std::make_shared<tls::CertTable>();
  for (const auto& c : certs) t->add(c);
  t->set_default(default_name);
  return t;
}
}  // namespace

TEST_CASE("certificate choice: exact, then one-label wildcard, then the default; ECDSA when the client takes it") {
  auto ec = make_cert("ec", "DNS:shop.test,DNS:*.wild.test", true);
  auto rsa = make_cert("rsa", "DNS:shop.test", false);
  auto def = make_cert("def", "DNS:default.test", true);
  auto t = table_with({ec, rsa, def}, "def");
  bool m;
  CHECK(t->select("shop.test", true, &m) == ec.get());
  CHECK(m);
  CHECK(t->select("SHOP.test.", false, &m) == rsa.get());  // case and a trailing dot do not matter
  CHECK(t->select("a.wild.test", true, &m) == ec.get());
  CHECK(m);
  CHECK(t->select("a.b.wild.test", true, &m) == def.get());  // one label deep only
  CHECK(!m);
  CHECK(t->select("wild.test", true, &m) == def.get());
  CHECK(t->select("", true, &m) == def.get());
  auto none = table_with({ec});
  CHECK(none->select("other.test", true, &m) == nullptr);
  CHECK(ec->names == std::vector<std::string>{"shop.test", "*.wild.test"});
}

TEST_CASE("uploads: the checks name the field and the problem") {
  std::string c, k, c2, k2, err;
  make_pem("DNS:a.test", true, &c, &k);
  make_pem("DNS:a.test", true, &c2, &k2);
  tls::Cert out;
  CHECK(!tls::parse_cert(c, k2, time(nullptr), &out, &err));
  CHECK(err == "key: does not match the certificate (the first one in cert)");
  CHECK(!tls::parse_cert(k, k, time(nullptr), &out, &err));
  CHECK(err.rfind("cert: holds a 'PRIVATE KEY' block", 0) == 0);
  CHECK(!tls::parse_cert(c, c, time(nullptr), &out, &err));
  CHECK(err == "key: holds a 'CERTIFICATE' block, not a private key");
  CHECK(!tls::parse_cert("", k, time(nullptr), &out, &err));
  CHECK(err == "cert: no PEM certificate found");
  std::string nc, nk;
  make_pem(nullptr, true, &nc, &nk);
  CHECK(!tls::parse_cert(nc, nk, time(nullptr), &out, &err));
  CHECK(err.rfind("cert: the certificate names no DNS name", 0) == 0);
  std::string ec_, ek;
  make_pem("DNS:a.test", true, &ec_, &ek, -60);  // expired a minute ago
  CHECK(!tls::parse_cert(ec_, ek, time(nullptr), &out, &err));
  CHECK(err.rfind("cert: the certificate expired on ", 0) == 0);
  CHECK(tls::parse_cert(ec_, ek, 0, &out, &err));  // pxd still loads it (now = 0): the old one keeps serving
}

TEST_CASE("TLS transport: a handshake fed one byte at a time, then plaintext both ways") {
  Pair p("shop.test", table_with({make_cert("shop", "DNS:shop.test", true)}));
  REQUIRE(p.handshake(1));
  CHECK(p.user.connected);
  CHECK(p.server->sni() == "shop.test");
  CHECK(p.server->version() == "TLSv1.3");
  std::string req(100000, 'x');
  for (size_t i = 0; i < req.size(); i++) req[i] = static_cast<char>('a' + i % 26);
  REQUIRE(SSL_write(p.client, req.data(), static_cast<int>(req.size())) == static_cast<int>(req.size()));
  p.pump(7);
  CHECK(p.user.got == req);
  net::Output o;
  o.copy("HTTP/1.1 200 OK\r\n");
  o.copy("Content-Length: 2\r\n\r\nok");
  REQUIRE(p.server->write(o) == 0);
  p.pump(1);
  char buf[256];
  int n = SSL_read(p.client, buf, sizeof buf);
  REQUIRE(n > 0);
  CHECK(std::string(buf, static_cast<size_t>(n)) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

TEST_CASE("TLS transport: a reader that stops gets the rest when it reads again, nothing lost or repeated") {
  Pair p("shop.test", table_with({make_cert("shop", "DNS:shop.test", true)}));
  REQUIRE(p.handshake(4096));
  std::string req(200000, 0);
  for (size_t i = 0; i < req.size(); i++) req[i] = static_cast<char>(i * 7 % 251);
  p.user.stop_after = 30000;
  REQUIRE(SSL_write(p.client, req.data(), static_cast<int>(req.size())) == static_cast<int>(req.size()));
  p.pump(5000);
  CHECK(p.user.got.size() >= 30000);
  CHECK(p.user.got.size() < req.size());
  CHECK(!p.inner.reading());  // backpressure reaches the socket
  p.user.stop_after = SIZE_MAX;
  p.server->read_start();  // delivers what waited (inside BoringSSL and in the stash)
  CHECK(p.user.got == req);
  // The client closes: close_notify reads as the end.
  SSL_shutdown(p.client);
  p.pump(3);
  CHECK(p.user.eof);
}

TEST_CASE("TLS transport: garbage instead of a ClientHello fails the handshake with an error, once") {
  Pair p(nullptr, table_with({make_cert("shop", "DNS:shop.test", true)}));
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  p.server->on_data(junk, sizeof junk - 1);
  CHECK(p.user.error);
  CHECK(!p.server->established());
  CHECK(p.server->failure() != nullptr);
  p.server->on_data(junk, sizeof junk - 1);  // nothing more goes through
  CHECK(p.user.got.empty());
}

TEST_CASE("TLS transport: an unknown name without a default certificate gets unrecognized_name") {
  Pair p("nobody.test", table_with({make_cert("shop", "DNS:shop.test", true)}));
  CHECK(!p.handshake(100));
  CHECK(p.user.error);
  CHECK(p.src.no_certificate == 1);
  ERR_clear_error();
  CHECK(SSL_do_handshake(p.client) != 1);  // the client reads the server's alert
  uint32_t e = ERR_peek_last_error();
  CHECK(ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_UNRECOGNIZED_NAME);
  ERR_clear_error();
}

// ---- ClientHello peeking (tls/client_hello.h) ----

namespace {
// A real client's first flight (BoringSSL), with `sni` (nullptr: none).
std::string real_hello(const char* sni) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL* c = SSL_new(ctx.get());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(in, -1);
  SSL_set_bio(c, in, out);
  SSL_set_connect_state(c);
  if (sni) SSL_set_tlsext_host_name(c, sni);
  SSL_do_handshake(c);
  const uint8_t* p;
  size_t len;
  BIO_mem_contents(out, &p, &len);
  std::string s(reinterpret_cast<const char*>(p), len);
  SSL_free(c);
  return s;
}

// The same handshake message re-cut into records of `size` bytes.
std::string recut(const std::string& one_record, size_t size) {
  std::string msg = one_record.substr(5), out;
  for (size_t i = 0; i < msg.size(); i += size) {
    size_t n = std::min(size, msg.size() - i);
    out += std::string("\x16\x03\x01", 3) + static_cast<char>(n >> 8) + static_cast<char>(n & 0xff) + msg.substr(i, n);
  }
  return out;
}

void put16(std::string* s, size_t v) {
  s->push_back(static_cast<char>(v >> 8));
  s->push_back(static_cast<char>(v & 0xff));
}

// A hand-made ClientHello carrying `exts` (already encoded), in one record.
std::string made_hello(const std::string& exts, bool with_ext_block = true) {
  std::string body("\x03\x03", 2);
  body += std::string(32, 'r');
  body += '\0';                                // no session id
  body += std::string("\x00\x02\x13\x01", 4);  // one suite
  body += std::string("\x01\x00", 2);          // null compression
  if (with_ext_block) {
    put16(&body, exts.size());
    body += exts;
  }
  std::string hs("\x01", 1);
  hs += static_cast<char>(0);
  put16(&hs, body.size());
  hs += body;
  std::string rec("\x16\x03\x01", 3);
  put16(&rec, hs.size());
  return rec + hs;
}

std::string sni_ext(std::initializer_list<std::string> names) {
  std::string list;
  for (const auto& n : names) {
    list += '\0';
    put16(&list, n.size());
    list += n;
  }
  std::string e("\x00\x00", 2);
  put16(&e, list.size() + 2);
  put16(&e, list.size());
  return e + list;
}
}  // namespace

TEST_CASE("ClientHello peek: a real hello's name, whole, split at every byte, and re-cut into small records") {
  std::string h = real_hello("Git.Example.TEST"), sni, err;
  REQUIRE(h.size() > 100);
  CHECK(tls::peek_client_hello(h, &sni, &err) == 1);
  CHECK(sni == "git.example.test");
  for (size_t i = 0; i < h.size(); i++) CHECK(tls::peek_client_hello(h.substr(0, i), &sni, &err) == 0);
  std::string cut = recut(h, 7);
  for (size_t i = 0; i < cut.size(); i++) REQUIRE(tls::peek_client_hello(cut.substr(0, i), &sni, &err) == 0);
  sni.clear();
  CHECK(tls::peek_client_hello(cut, &sni, &err) == 1);
  CHECK(sni == "git.example.test");
  CHECK(tls::peek_client_hello(real_hello(nullptr), &sni, &err) == 1);
  CHECK(sni.empty());
}

TEST_CASE("ClientHello peek: garbage, oversized and malformed hellos are refused, saying why") {
  std::string sni, err;
  CHECK(tls::peek_client_hello("GET / HTTP/1.1\r\n", &sni, &err) == -1);
  CHECK(err == "not a TLS handshake record");
  CHECK(tls::peek_client_hello(std::string("\x16\x02", 2), &sni, &err) == -1);
  // A record longer than TLS allows; a hello announcing 70000 bytes (refused before they come).
  CHECK(tls::peek_client_hello(std::string("\x16\x03\x01\x40\x01", 5), &sni, &err) == -1);
  CHECK(tls::peek_client_hello(std::string("\x16\x03\x01\x00\x04\x01\x01\x11\x70", 9), &sni, &err) == -1);
  CHECK(err == "a ClientHello over 16384 bytes");
  // A ServerHello (type 2) where a ClientHello belongs.
  std::string s = made_hello("");
  s[5] = 2;
  CHECK(tls::peek_client_hello(s, &sni, &err) == -1);
  CHECK(err == "not a ClientHello");
  // Made by hand: the well-formed ones parse; each defect is named.
  CHECK(tls::peek_client_hello(made_hello(sni_ext({"a.test"})), &sni, &err) == 1);
  CHECK(sni == "a.test");
  CHECK(tls::peek_client_hello(made_hello("", false), &sni, &err) == 1);
  CHECK(sni.empty());
  CHECK(tls::peek_client_hello(made_hello(sni_ext({"a.test"}) + sni_ext({"b.test"})), &sni, &err) == -1);
  CHECK(err == "an extension appears twice");
  CHECK(tls::peek_client_hello(made_hello(sni_ext({"a.test", "b.test"})), &sni, &err) == -1);
  CHECK(err == "two host names in server_name");
  for (const char* bad : {"a b.test", "a..test", ".a.test", "a\x01.test", ""}) {
    CHECK(tls::peek_client_hello(made_hello(sni_ext({bad})), &sni, &err) == -1);
    CHECK(err.find("server_name") != std::string::npos);
  }
  std::string trailing = made_hello(sni_ext({"a.test"}));
  trailing.back() = 'x';  // the host name's last byte: still valid
  CHECK(tls::peek_client_hello(trailing, &sni, &err) == 1);
  std::string truncated = made_hello(sni_ext({"a.test"}));
  truncated[truncated.size() - 12] = '\x7f';  // an extension length beyond the block
  CHECK(tls::peek_client_hello(truncated, &sni, &err) == -1);
}

namespace {
struct Decider final : tls::HelloDecider {
  bool take = false;
  int asked = 0;
  std::string sni, hello;
  bool on_client_hello(std::string_view s, std::string_view h) override {
    asked++;
    sni = s;
    hello = h;
    return take;
  }
};
struct Collect final : net::TransportUser {
  std::string got;
  bool eof = false;
  void on_data(const char* d, size_t n) override { got.append(d, n); }
  void on_eof() override { eof = true; }
  void on_error(int) override {}
  void on_drained() override {}
  void on_closed() override {}
};
}  // namespace

TEST_CASE("ClientHello peek transport: asks once with every byte held, then passes all of it up, or nothing") {
  std::string h = recut(real_hello("git.test"), 100) + "after";
  for (bool take : {false, true}) {
    FakeInner inner;
    Decider d;
    d.take = take;
    tls::HelloPeekTransport peek(&inner, &d);
    Collect up;
    peek.set_user(&up);
    peek.read_start();
    for (size_t i = 0; i < h.size(); i++) peek.on_data(h.data() + i, 1);
    CHECK(d.asked == 1);
    CHECK(d.sni == "git.test");
    CHECK(h.rfind(d.hello, 0) == 0);  // the bytes up to the hello's end
    CHECK(up.got == (take ? "" : h));
  }
  // A partial hello, then the end: the bytes go up (the TLS layer refuses them), then the end.
  FakeInner inner;
  Decider d;
  tls::HelloPeekTransport peek(&inner, &d);
  Collect up;
  peek.set_user(&up);
  peek.on_data(h.data(), 20);
  peek.on_eof();
  CHECK(d.asked == 0);
  CHECK(up.got == h.substr(0, 20));
  CHECK(up.eof);
}

TEST_CASE("http::Client: clients sharing a ClientTls resume the session the server gave, not a full handshake") {
  std::string cert, key;
  make_pem("IP:127.0.0.1", true, &cert, &key);
  char dir[] = "/tmp/px-unit-tls.XXXXXX";
  REQUIRE(mkdtemp(dir));
  std::string ca = std::string(dir) + "/ca.pem";
  std::ofstream(ca) << cert;
  // The server: BoringSSL on a blocking socket in a thread; it answers whether it resumed.
  bssl::UniquePtr<SSL_CTX> sctx(SSL_CTX_new(TLS_method()));
  bssl::UniquePtr<BIO> cb(BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size())));
  bssl::UniquePtr<BIO> kb(BIO_new_mem_buf(key.data(), static_cast<int>(key.size())));
  bssl::UniquePtr<X509> x(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  bssl::UniquePtr<EVP_PKEY> k(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  REQUIRE(SSL_CTX_use_certificate(sctx.get(), x.get()));
  REQUIRE(SSL_CTX_use_PrivateKey(sctx.get(), k.get()));
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(lfd, 8) == 0);
  socklen_t alen = sizeof a;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
  const int calls = 4;
  std::thread server([&] {
    for (int i = 0; i < calls; i++) {
      int fd = accept(lfd, nullptr, nullptr);
      if (fd < 0) return;
      SSL* s = SSL_new(sctx.get());
      SSL_set_fd(s, fd);
      if (SSL_accept(s) == 1) {
        std::string in;
        char buf[4096];
        int n;
        while (in.find("\r\n\r\n") == std::string::npos && (n = SSL_read(s, buf, sizeof buf)) > 0) in.append(buf, n);
        std::string body = SSL_session_reused(s) ? "resumed" : "full";
        std::string out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        SSL_write(s, out.data(), static_cast<int>(out.size()));
        SSL_shutdown(s);
      }
      SSL_free(s);
      close(fd);
    }
  });
  std::string url = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/";
  auto tls = std::make_shared<px::http::ClientTls>();
  std::string err;
  REQUIRE(tls->set_ca_file(ca, &err));
  auto call = [&](bool shared) {  // each on a client (and a loop) of its own, as pxadmind's calls to etcd
    px::http::ClientRequest rq;
    rq.url = url;
    px::http::ClientResponse r = px::http::Client::fetch_now(rq, [&](px::http::Client& c) {
      c.timeout_ms = 20000;
      if (shared)
        c.set_tls(tls);
      else
        CHECK(c.set_ca_file(ca, &err));
    });
    CHECK(r.status == 200);
    return r.body;
  };
  CHECK(call(true) == "full");
  CHECK(call(true) == "resumed");
  CHECK(call(true) == "resumed");
  CHECK(call(false) == "full");  // a client with settings of its own has no session to offer
  server.join();
  close(lfd);
  std::remove(ca.c_str());
  rmdir(dir);
}
