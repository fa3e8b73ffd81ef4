#include "http/client.h"

#include <openssl/x509.h>

#include <cstring>
#include <memory>

#include "core/strings.h"
#include "http/client_conn.h"
#include "http/h1.h"
#include "http/parser.h"
#include "net/cidr.h"
#include "net/uv_transport.h"
#include "tls/transport.h"

namespace px::http {

std::string ClientResponse::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (n == name) return v;
  return "";
}

std::vector<std::string> ClientResponse::links(std::string_view rel) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : headers) {
    if (n != "link") continue;
    // Each value may hold several links: <url>; rel="x", <url2>; rel=y
    size_t i = 0;
    while (i < v.size()) {
      size_t lt = v.find('<', i), gt = v.find('>', lt == std::string::npos ? i : lt);
      if (lt == std::string::npos || gt == std::string::npos) break;
      std::string url = v.substr(lt + 1, gt - lt - 1);
      size_t next = v.find('<', gt);
      std::string params = v.substr(gt + 1, next == std::string::npos ? std::string::npos : next - gt - 1);
      size_t r = params.find("rel=");
      if (r != std::string::npos) {
        std::string val = params.substr(r + 4);
        size_t end = val.find_first_of(";,");
        val = std::string(trim(val.substr(0, end)));
        if (val.size() >= 2 && val.front() == '"') val = val.substr(1, val.size() - 2);
        if (val == rel) out.push_back(url);
      }
      i = next == std::string::npos ? v.size() : next;
    }
  }
  return out;
}

bool split_url(std::string_view url, bool* tls, std::string* host, uint16_t* port, std::string* target) {
  if (url.rfind("https://", 0) == 0) {
    *tls = true;
    url.remove_prefix(8);
    *port = 443;
  } else if (url.rfind("http://", 0) == 0) {
    *tls = false;
    url.remove_prefix(7);
    *port = 80;
  } else {
    return false;
  }
  size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  *target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (!target->empty() && target->front() == '?') target->insert(0, "/");
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view hostpart = authority, portpart;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    hostpart = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return false;
      portpart = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      hostpart = authority.substr(0, colon);
      portpart = authority.substr(colon + 1);
    }
  }
  if (hostpart.empty()) return false;
  if (!portpart.empty()) {
    uint64_t p;
    if (!parse_u64(portpart, &p) || p == 0 || p > 65535) return false;
    *port = static_cast<uint16_t>(p);
  }
  *host = std::string(hostpart);
  return true;
}

namespace {
// The call a client SSL belongs to, for the new-session callback.
int call_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
}  // namespace

// A call: its connection is an http::ClientConn (client_conn.h), as the proxy's upstream connections' are.
struct Client::Call final : ClientConn, net::TransportUser, Sink {
  Client* client;
  ClientRequest req;
  Done done;
  ClientResponse resp;
  bool tls = false;
  std::string host, target;
  uint16_t port = 0;
  uv_getaddrinfo_t gai{};
  uv_timer_t timer{};
  Head head;
  Limits limits;
  bool finished = false;
  bool body_too_large = false;
  bool resolving = false;
  bool open = false;  // a transport was initialised: it must be closed
  int closes = 0;
  Done pending_cb;
  ClientResponse pending;

  std::string where() const {
    return req.connect_to.starts_with("unix:") ? req.connect_to.substr(5) : host + ":" + std::to_string(port);
  }
  // Whom a TLS session is kept for: the name verified, and where it was dialled.
  std::string server() const { return host + ":" + std::to_string(port) + " " + req.connect_to; }

  void fail(ClientFailure kind, std::string why, int sys = 0) {
    resp = ClientResponse();
    resp.failure = kind;
    resp.error = std::move(why);
    resp.sys_error = sys;
    finish();
  }
  // Delivers the answer (later, from the loop) and releases everything.
  void finish() {
    if (finished) return;
    finished = true;
    client->calls_.erase(this);
    if (req.ssl && !wrap) SSL_free(req.ssl);  // never handed to a TLS layer
    req.ssl = nullptr;
    uv_timer_stop(&timer);
    closes = 1 + (open ? 1 : 0);
    if (open) tr->close();
    // The timer's close callback runs on a later loop turn: the answer goes from there.
    pending_cb = std::move(done);
    pending = std::move(resp);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), [](uv_handle_t* h) {
      Call* c = static_cast<Call*>(h->data);
      if (c->pending_cb) c->pending_cb(std::move(c->pending));
      c->pending_cb = nullptr;
      c->released();
    });
  }
  void released() {
    if (--closes == 0 && !resolving) delete this;
  }

  void resolved(int status, addrinfo* res) {
    resolving = false;
    if (finished) {
      if (res) uv_freeaddrinfo(res);
      if (closes == 0) delete this;
      return;
    }
    if (status != 0 || !res) {
      fail(ClientFailure::resolve, "resolve " + host + ": " + uv_strerror(status), status);
      return;
    }
    dial(res->ai_addr);
    uv_freeaddrinfo(res);
  }

  // TLS over the connection, for https URLs: the caller's SSL, or one from the client's CAs.
  bool begin_tls() {
    SSL* ssl = req.ssl;
    req.ssl = nullptr;
    if (!ssl) {
      if (!client->tls_) {
        std::string err;
        if (!client->set_ca_file("", &err)) {
          fail(ClientFailure::tls, err);
          return false;
        }
      }
      ssl = SSL_new(client->tls_->ctx());
      SSL_set_connect_state(ssl);
      if (!client->insecure_) {  // an unverified connection's session is never offered to a verified one
        SSL_set_ex_data(ssl, call_index(), this);
        if (auto s = client->tls_->session(server())) SSL_set_session(ssl, s.get());
      }
      net::IpAddr ip;
      X509_VERIFY_PARAM* vp = SSL_get0_param(ssl);
      if (net::IpAddr::parse(host, &ip)) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, host.c_str());
      } else {
        SSL_set_tlsext_host_name(ssl, host.c_str());
        X509_VERIFY_PARAM_set1_host(vp, host.data(), host.size());
      }
      if (client->insecure_) SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      static const uint8_t kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
      SSL_set_alpn_protos(ssl, kAlpn, sizeof kAlpn);
    }
    start_tls(ssl, this);
    return true;
  }

  void dial(const sockaddr* addr) {
    open_tcp(client->loop_, this);
    open = true;
    if (tls && !begin_tls()) return;
    int r = connect(addr);
    if (r != 0) fail(ClientFailure::connect, "connect to " + where() + ": " + uv_strerror(r), r);
  }

  void dial_unix(const std::string& path) {
    open_unix(client->loop_, this);
    open = true;
    if (tls && !begin_tls()) return;
    connect_unix(path.c_str());
  }

  // net::TransportUser
  void on_connected() override {
    if (finished) return;
    std::string& text = out.begin_scratch();
    HeadWriter w(text);
    w.request_line(req.method, target, false);
    bool default_port = port == (tls ? 443 : 80);
    bool v6 = host.find(':') != std::string::npos;
    w.field("Host", (v6 ? "[" + host + "]" : host) + (default_port ? "" : ":" + std::to_string(port)));
    auto given = [&](std::string_view name) {  // the caller's own fields win (px.fetch)
      for (const auto& h : req.headers)
        if (iequals(h.first, name)) return true;
      return false;
    };
    if (!req.user_agent.empty() && !given("user-agent")) w.field("User-Agent", req.user_agent);
    if (!req.head_only && !given("accept")) w.field("Accept", "*/*");
    w.field("Connection", "close");
    if (!req.content_type.empty()) w.field("Content-Type", req.content_type);
    for (const auto& [n, v] : req.headers) w.field(n, v);
    bool body = !req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
    w.end_request(body ? Framing::length : Framing::none, req.body.size(), "");
    text += req.body;
    out.end_scratch();
    tr->write(out);
    tr->read_start();
  }
  void on_data(const char* data, size_t len) override {
    if (finished) return;
    Parsed e = parser.execute(data, len);
    if (finished) return;
    if (e != Parsed::ok && e != Parsed::paused)
      fail(body_too_large ? ClientFailure::too_large : ClientFailure::bad_response,
           where() + ": invalid HTTP response (" + parser.error_reason() + ")");
  }
  void on_eof() override {
    if (finished) return;
    if (parser.needs_eof() && parser.finish() == Parsed::paused) return;
    if (!finished) fail(ClientFailure::closed, where() + ": the connection closed before the response was complete");
  }
  void on_error(int err) override {
    if (finished) return;
    std::string why = tls_failure();
    if (!why.empty()) {
      fail(ClientFailure::tls, "TLS with " + where() + ": " + why);
      return;
    }
    fail(resp.status ? ClientFailure::closed : ClientFailure::connect,
         (resp.status ? "read from " : "connect to ") + where() + ": " + uv_strerror(err), err);
  }
  void on_drained() override {}
  void on_closed() override { released(); }

  // Sink (the response parser)
  int on_head(Head& h) override {
    resp.status = h.status;
    for (size_t i = 0; i < h.headers.size(); i++) {
      std::string n(h.name(i));
      for (char& c : n) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
      resp.headers.emplace_back(std::move(n), std::string(h.value(i)));
    }
    if (req.head_only && h.status >= 200) {
      finish();
      return kPause;  // nothing more is read
    }
    if (req.on_body && h.status >= 200) uv_timer_stop(&timer);
    return 0;
  }
  int on_body(const char* d, size_t n) override {
    if (req.on_body) {
      if (req.on_body(std::string_view(d, n))) return 0;
      finish();
      return kPause;
    }
    if (resp.body.size() + n > client->max_body) {
      body_too_large = true;
      return parser.set_error(502, "response body too large");
    }
    resp.body.append(d, n);
    return 0;
  }
  int on_complete() override {
    if (resp.status >= 100 && resp.status < 200) {  // 1xx: the real answer follows
      resp.headers.clear();
      resp.status = 0;
      return 0;
    }
    finish();
    return kPause;
  }
};

Client::~Client() { cancel_all(); }

void Client::keep_session(Call* c, SSL_SESSION* s) { c->client->tls_->keep(c->server(), s); }

void Client::cancel(Call* c) {
  if (!calls_.count(c)) return;
  c->done = nullptr;
  c->finish();
}

void Client::cancel_all() {
  for (Call* c : std::set<Call*>(calls_)) cancel(c);
}

bool ClientTls::set_ca_file(const std::string& ca_file, std::string* error) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  const char* bundle = ca_file.empty() ? "/etc/ssl/certs/ca-certificates.crt" : ca_file.c_str();
  if (!SSL_CTX_load_verify_locations(ctx.get(), bundle, nullptr)) {
    *error = std::string(bundle) + ": no CA certificates could be read";
    return false;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  // Sessions are kept here, by server, not in the context's own cache (which a client does not look in).
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx.get(), [](SSL* ssl, SSL_SESSION* session) {
    auto* c = static_cast<Client::Call*>(SSL_get_ex_data(ssl, call_index()));
    if (!c) return 0;
    Client::keep_session(c, session);
    return 1;  // taken
  });
  ctx_ = std::move(ctx);
  return true;
}

bool ClientTls::set_client_cert(const std::string& cert_file, const std::string& key_file, std::string* error) {
  if (!ctx_ && !set_ca_file("", error)) return false;
  if (SSL_CTX_use_certificate_chain_file(ctx_.get(), cert_file.c_str()) != 1) {
    *error = cert_file + ": no PEM certificate could be read";
    return false;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx_.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    *error = key_file + ": no PEM private key could be read";
    return false;
  }
  if (SSL_CTX_check_private_key(ctx_.get()) != 1) {
    *error = key_file + ": the key does not match the certificate in " + cert_file;
    return false;
  }
  return true;
}

bssl::UniquePtr<SSL_SESSION> ClientTls::session(const std::string& server) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = sessions_.find(server);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION_up_ref(it->second.get());
  return bssl::UniquePtr<SSL_SESSION>(it->second.get());
}

void ClientTls::keep(const std::string& server, SSL_SESSION* s) {
  std::lock_guard<std::mutex> g(mu_);
  sessions_[server].reset(s);
}

bool Client::set_ca_file(const std::string& ca_file, std::string* error) {
  auto tls = std::make_shared<ClientTls>();
  if (!tls->set_ca_file(ca_file, error)) return false;
  tls_ = std::move(tls);
  return true;
}

bool Client::set_client_cert(const std::string& cert_file, const std::string& key_file, std::string* error) {
  if (!tls_ && !set_ca_file("", error)) return false;
  return tls_->set_client_cert(cert_file, key_file, error);
}

Client::Call* Client::fetch(ClientRequest req, Done done) {
  auto* c = new Call();
  c->client = this;
  c->req = std::move(req);
  c->done = std::move(done);
  calls_.insert(c);
  c->limits.max_head = 64 * 1024;
  c->limits.max_headers = 256;
  c->parser.init(Kind::response, c, &c->limits);
  c->parser.attach(&c->head);
  uv_timer_init(loop_, &c->timer);
  c->timer.data = c;
  if (!split_url(c->req.url, &c->tls, &c->host, &c->port, &c->target)) {
    c->fail(ClientFailure::bad_url, "'" + c->req.url + "' is not an http or https URL");
    return c;
  }
  uv_timer_start(
      &c->timer,
      [](uv_timer_t* t) {
        Call* c = static_cast<Call*>(t->data);
        uint64_t ms = c->req.timeout_ms ? c->req.timeout_ms : c->client->timeout_ms;
        c->fail(ClientFailure::timeout,
                c->where() + ": no answer within " +
                    (ms % 1000 ? std::to_string(ms) + " ms" : std::to_string(ms / 1000) + " s"),
                UV_ETIMEDOUT);
      },
      c->req.timeout_ms ? c->req.timeout_ms : timeout_ms, 0);
  if (c->req.connect_addr.ss_family != AF_UNSPEC) {
    c->dial(reinterpret_cast<const sockaddr*>(&c->req.connect_addr));
    return c;
  }
  if (c->req.connect_to.starts_with("unix:")) {
    c->dial_unix(c->req.connect_to.substr(5));
    return c;
  }
  std::string dial_host = c->host, dial_port = std::to_string(c->port);
  if (!c->req.connect_to.empty()) {
    size_t colon = c->req.connect_to.rfind(':');
    if (colon == std::string::npos) {
      c->fail(ClientFailure::bad_url, "connect to '" + c->req.connect_to + "': expected ADDRESS:PORT");
      return c;
    }
    dial_host = c->req.connect_to.substr(0, colon);
    if (!dial_host.empty() && dial_host.front() == '[') dial_host = dial_host.substr(1, dial_host.size() - 2);
    dial_port = c->req.connect_to.substr(colon + 1);
  }
  // A numeric address needs no resolver (health probes dial their peer's address on every check).
  uint64_t port_num;
  sockaddr_storage ss{};
  if (parse_u64(dial_port, &port_num) && port_num > 0 && port_num <= 65535 &&
      (uv_ip4_addr(dial_host.c_str(), static_cast<int>(port_num), reinterpret_cast<sockaddr_in*>(&ss)) == 0 ||
       uv_ip6_addr(dial_host.c_str(), static_cast<int>(port_num), reinterpret_cast<sockaddr_in6*>(&ss)) == 0)) {
    c->dial(reinterpret_cast<sockaddr*>(&ss));
    return c;
  }
  c->gai.data = c;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->resolving = true;
  int r = uv_getaddrinfo(
      loop_, &c->gai,
      [](uv_getaddrinfo_t* g, int status, addrinfo* res) { static_cast<Call*>(g->data)->resolved(status, res); },
      dial_host.c_str(), dial_port.c_str(), &hints);
  if (r != 0) {
    c->resolving = false;
    c->fail(ClientFailure::resolve, "resolve " + c->host + ": " + uv_strerror(r), r);
  }
  return c;
}

ClientResponse Client::fetch_now(ClientRequest req, const std::function<void(Client&)>& setup) {
  ClientResponse resp;
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Client client(&loop);
    if (setup) setup(client);
    client.fetch(std::move(req), [&](ClientResponse r) { resp = std::move(r); });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // what the client's destruction closed
  uv_loop_close(&loop);
  return resp;
}

}  // namespace px::http
