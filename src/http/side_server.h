// px::http::SideServer — a small HTTP/1.1 server for side listeners that are
// not on the request path: pxd's metrics_listen and pxadmind's --metrics.
// Requests are read by the HTTP/1 codec (http/parser.h) and answered by a
// handler on the loop's thread; bodies are refused, keep-alive is honoured.
#pragma once
#include <uv.h>

#include <functional>
#include <set>
#include <string>

#include "http/parser.h"

namespace px::http {

struct SideReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class SideServer {
 public:
  using Handler = std::function<SideReply(const Head&)>;
  // Prometheus' /metrics: GET or HEAD of that path (any query), 404 elsewhere, 405 for other methods.
  static Handler metrics(std::function<std::string()> text);
  SideServer(uv_loop_t* loop, Handler h) : loop_(loop), handler_(std::move(h)) {}
  ~SideServer();
  SideServer(const SideServer&) = delete;
  SideServer& operator=(const SideServer&) = delete;
  // Listens on a bound socket (takes it), or binds addr. 0 or a libuv error code.
  int open_fd(int fd);
  int open_addr(const sockaddr* addr);
  int port() const;  // the bound port
  void close();      // the listener and every connection

  // For the connections (side_server.cpp).
  const Handler& handler() const { return handler_; }
  const Limits& limits() const { return limits_; }
  std::set<void*> conns;

 private:
  int listen();
  uv_loop_t* loop_;
  Handler handler_;
  Limits limits_{8 * 1024, 50, 2 * 1024, false};
  uv_tcp_t listener_{};
  bool open_ = false;
};

}  // namespace px::http
