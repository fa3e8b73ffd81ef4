// px::acme::HttpClient — a small HTTPS (and HTTP) client on the event loop, for
// pxadmind's outbound calls: the ACME CA, renewal information. One request per
// connection (Connection: close), names resolved with uv_getaddrinfo, the
// server verified against the system's CA bundle or a configured one, the
// response parsed by px's HTTP/1 codec. Not on any request path.
#pragma once
#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace px::acme {

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::string content_type;  // with a body
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // more fields (pxctl trace: -H)
  std::string connect_to;                                    // "ADDRESS:PORT" instead of the URL's (Host and SNI stay)
  std::string user_agent = "px-acme/" PX_VERSION;
};

struct HttpResponse {
  int status = 0;                                            // 0: no response; `error` says why
  std::string error;                                         // "connect to 127.0.0.1:14000: connection refused"
  std::vector<std::pair<std::string, std::string>> headers;  // names lower case, in order
  std::string body;
  std::string header(std::string_view lower_name) const;
  // Link: <url>;rel="up" → the URLs with that relation.
  std::vector<std::string> links(std::string_view rel) const;
};

// Splits "https://host:port/path?q": false when it is not an http(s) URL.
bool split_url(std::string_view url, bool* tls, std::string* host, uint16_t* port, std::string* target);

class HttpClient {
 public:
  explicit HttpClient(uv_loop_t* loop) : loop_(loop) {}
  ~HttpClient();
  // Abandons every call in flight: their callbacks never run (at shutdown, while the loop still runs).
  void cancel_all();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // The CAs servers are verified against: a PEM file, or "" for the system's bundle.
  bool set_ca_file(const std::string& ca_file, std::string* error);
  // No verification of the server's certificate (pxctl trace -k). Before the first fetch.
  void set_insecure() { insecure_ = true; }
  // `done` is called exactly once, from the loop (never from inside fetch()),
  // unless the client is destroyed first.
  void fetch(HttpRequest req, std::function<void(HttpResponse)> done);
  uint64_t timeout_ms = 30000;
  size_t max_body = 4 * 1024 * 1024;

  struct Call;

 private:
  friend struct Call;
  uv_loop_t* loop_;
  bssl::UniquePtr<SSL_CTX> ctx_;
  std::set<Call*> calls_;
  bool insecure_ = false;
};

}  // namespace px::acme
