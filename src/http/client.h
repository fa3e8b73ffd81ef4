// px::http::Client — the HTTP/1 client connection for everything that is not
// a proxied request: pxd's health probes, pxadmind's ACME and OCSP calls and
// its reads of pxd's metrics, pxctl's calls to pxadmind (over its unix socket
// or TCP) and `pxctl trace`. Proxied requests go through the upstream codec
// (upstream/upconn.h), which keeps connections alive and streams bodies with
// backpressure; both read answers with the same parser (http/parser.h) and
// write requests with the same HeadWriter (http/h1.h).
//
// One request per connection (Connection: close): the name resolved with
// uv_getaddrinfo (a numeric address is used as it is), TLS verified against the
// system's CA bundle, a configured one, or a caller-made SSL (a peer's upstream
// TLS settings), 1xx answers skipped, the body read to its framing's end.
#pragma once
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace px::http {

struct ClientRequest {
  std::string method = "GET";
  std::string url;           // http://host[:port]/target or https://…
  std::string content_type;  // with a body
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more fields (pxctl trace: -H)
  // Where to connect instead of the URL's host (Host and SNI stay the URL's):
  // "ADDRESS:PORT", or "unix:PATH" for a unix socket; or an address as it is (a health probe's peer).
  std::string connect_to;
  sockaddr_storage connect_addr{};  // used when its family is set
  std::string user_agent = "px/" PX_VERSION;
  uint64_t timeout_ms = 0;  // 0: the client's timeout_ms
  SSL* ssl = nullptr;       // https: this connection's TLS, made by the caller (taken, even on failure)
  bool head_only = false;   // answer as soon as the status line and fields are in (a health probe)
  // A streamed body (an etcd watch): its bytes go here as they come and are not kept; returning false ends
  // the call. The timeout then covers the head only.
  std::function<bool(std::string_view)> on_body;
};

// Why a call got no response, for callers that act on the kind (the text is in `error`).
enum class ClientFailure : uint8_t {
  none,
  bad_url,       // not an http(s) URL, or a malformed connect_to
  resolve,       // the name did not resolve
  connect,       // the connection was not made
  tls,           // no CAs, or the handshake or the certificate failed
  timeout,       // no whole answer within the timeout
  bad_response,  // the answer is not valid HTTP/1
  too_large,     // the answer's body is over max_body
  closed,        // the connection ended before the whole answer
};

struct ClientResponse {
  int status = 0;                                            // 0: no response; `error` says why
  ClientFailure failure = ClientFailure::none;               // with status 0
  std::string error;                                         // "connect to 127.0.0.1:14000: connection refused"
  int sys_error = 0;                                         // with `error`, when a call failed: the libuv code
  std::vector<std::pair<std::string, std::string>> headers;  // names lower case, in order
  std::string body;
  std::string header(std::string_view lower_name) const;
  // Link: <url>;rel="up" → the URLs with that relation.
  std::vector<std::string> links(std::string_view rel) const;
};

// Splits "https://host:port/path?q": false when it is not an http(s) URL.
bool split_url(std::string_view url, bool* tls, std::string* host, uint16_t* port, std::string* target);

// The TLS side of clients, shareable between them and across threads (each fetch_now makes a client of its
// own): the CAs, a client certificate, and the last session each server gave, so that the next connection to
// it resumes that session: an abbreviated handshake, with no certificates sent, signed or checked again
// (pxadmind's calls to etcd, one connection each).
class ClientTls {
 public:
  // The CAs servers are verified against: a PEM file, or "" for the system's bundle. Makes the context.
  bool set_ca_file(const std::string& ca_file, std::string* error);
  // A client certificate and its key (PEM files) to present, after set_ca_file.
  bool set_client_cert(const std::string& cert_file, const std::string& key_file, std::string* error);
  SSL_CTX* ctx() const { return ctx_.get(); }
  // The session to offer `server` (host:port as dialled), if one was kept; and keeping one (taken).
  bssl::UniquePtr<SSL_SESSION> session(const std::string& server);
  void keep(const std::string& server, SSL_SESSION* s);

 private:
  bssl::UniquePtr<SSL_CTX> ctx_;
  std::mutex mu_;
  std::map<std::string, bssl::UniquePtr<SSL_SESSION>> sessions_;
};

class Client {
 public:
  struct Call;
  using Done = std::function<void(ClientResponse)>;

  explicit Client(uv_loop_t* loop) : loop_(loop) {}
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The CAs servers are verified against: a PEM file, or "" for the system's bundle (ClientTls).
  bool set_ca_file(const std::string& ca_file, std::string* error);
  // A client certificate and its key (PEM files) to present, after set_ca_file.
  bool set_client_cert(const std::string& cert_file, const std::string& key_file, std::string* error);
  // TLS settings and sessions made once and shared with other clients.
  void set_tls(std::shared_ptr<ClientTls> tls) { tls_ = std::move(tls); }
  // No verification of the server's certificate (pxctl trace -k). Before the first fetch.
  void set_insecure() { insecure_ = true; }
  // `done` is called exactly once, from the loop (never from inside fetch()),
  // unless the call is cancelled or the client destroyed first. The handle is
  // for cancel() only.
  Call* fetch(ClientRequest req, Done done);
  // Abandons one call (its callback never runs); a call that already finished is ignored.
  void cancel(Call* c);
  // Abandons every call in flight (at shutdown, while the loop still runs).
  void cancel_all();
  // Runs one request on a loop of its own until it is answered (pxctl, pxadmind's reads of pxd);
  // `setup` sets the client's timeout, body limit, CAs.
  static ClientResponse fetch_now(ClientRequest req, const std::function<void(Client&)>& setup = nullptr);

  uint64_t timeout_ms = 30000;
  size_t max_body = 4 * 1024 * 1024;

  // A session the server of a call gave (BoringSSL's new-session callback), kept for its next connection.
  static void keep_session(Call* c, SSL_SESSION* s);

 private:
  friend struct Call;
  uv_loop_t* loop_;
  std::shared_ptr<ClientTls> tls_;
  std::set<Call*> calls_;
  bool insecure_ = false;
};

}  // namespace px::http
