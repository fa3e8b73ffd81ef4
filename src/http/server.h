// px::http::Server — the HTTP/1 server connection for everything that is not
// the proxy's request path: pxadmind's API and dashboard (unix socket and TCP),
// and the metrics listeners of pxd and pxadmind. Whole requests in (the body
// collected up to a bound), whole answers out, keep-alive and pipelining
// honoured, a request the parser refuses answered with its status and closed.
// Proxied requests are read by the streaming codecs (codec/h1_server.h,
// codec/h2.h); all of them read with the same parser (http/parser.h) and write
// with the same HeadWriter (http/h1.h).
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/parser.h"

namespace px::http {

struct Reply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";  // "": none
  std::string cache_control = "no-store";
  std::vector<std::pair<std::string, std::string>> fields;  // more fields, in order
  std::string body;                                         // not sent for HEAD, 204 and 304
  bool close = false;                                       // end the connection once this is out
};

struct ServerRequest {
  const Head& head;
  const std::string& body;  // collected whole (nothing when it was too large)
  bool body_too_large;      // over the server's max_body: the body was read and dropped
  int listener;             // the tag its listener was opened with
  bool unix_socket;         // came through a unix socket ...
  const std::string& peer;  // ... from "uid:N" (SO_PEERCRED), or over TCP from this address
};

class Server {
 public:
  using Handler = std::function<Reply(const ServerRequest&)>;
  struct Options {
    Limits limits{8 * 1024, 50, 2 * 1024, false};
    size_t max_body = 0;  // 0: a request with a body gets 413
    std::string name;     // the Server field ("": none)
    // The answer to a request the parser refused (status, reason); by default its reason as text.
    std::function<Reply(int status, std::string_view reason)> refused;
  };
  Server(uv_loop_t* loop, Handler h, Options o);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Listens on a bound TCP socket (takes it), a TCP address, or a unix socket path (a stale
  // socket file is replaced, the mode set). 0 or a libuv error code; `tag` reaches the handler.
  int listen_fd(int fd, int tag = 0);
  int listen_tcp(const sockaddr* addr, int tag = 0);
  int listen_unix(const std::string& path, int mode, int tag = 0);
  int port(int tag = 0) const;  // a TCP listener's bound port
  void close();                 // every listener and connection

  struct Conn;
  struct Listener;
  // For the connections (server.cpp).
  const Handler& handler() const { return handler_; }
  const Options& options() const { return opt_; }
  std::set<Conn*> conns;

 private:
  int start(Listener* l);
  uv_loop_t* loop_;
  Handler handler_;
  Options opt_;
  std::vector<std::unique_ptr<Listener>> listeners_;
};

// Prometheus' /metrics: GET or HEAD of that path (any query), 404 elsewhere, 405 for other methods.
Server::Handler metrics_handler(std::function<std::string()> text);

}  // namespace px::http
