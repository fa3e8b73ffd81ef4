// px::proxy::Fetcher — filters' outbound requests (px.fetch: forward_auth's subrequests), one per worker.
//
// Each call is an HTTP/1.1 exchange on an http::ClientConn (client_conn.h) driven here, as UpConn drives the
// proxied ones: on the worker's epoll set, kept alive per origin (scheme, address, port) and reused, so that a
// subrequest per proxied request costs a write and a read, not a connection. A kept connection the server
// closed meanwhile is retried once on a new one. The answer is collected whole (at most kMaxBody).
//
// Only numeric addresses are dialled here (an auth service on the same host or network is named so); a URL
// with a host name goes through http::Client (a resolution and a connection per call).
#pragma once
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lua/request_view.h"

namespace px::proxy {

class Worker;
struct FetchConn;

class Fetcher {
 public:
  static constexpr size_t kMaxBody = 1024 * 1024;
  static constexpr size_t kMaxIdle = 64;  // kept connections per origin
  using Done = void (*)(void* ctx, lua::FetchResult& r);
  using MakeSsl = SSL* (*)(void* ctx);  // a new connection's TLS (https), from the route's settings

  explicit Fetcher(Worker* w) : w_(w) {}
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  // Starts the call; done(ctx, result) runs later from the loop, never from inside start(), unless cancelled.
  // https: make_ssl(ctx) gives a new connection's TLS; `tls_id` names those settings, so that a connection is
  // reused only by calls with the same ones (a route that verifies never gets one made without). nullptr:
  // not a numeric address.
  FetchConn* start(const lua::FetchCall& c, const std::string& tls_id, MakeSsl make_ssl, Done done, void* ctx);
  // Abandons a call: done never runs; its connection closes (its exchange cannot be finished).
  void cancel(FetchConn* call);
  // At shutdown: every kept connection closes.
  void close_idle();

  struct Origin {
    sockaddr_storage addr{};
    bool tls = false;
    std::string host;  // the Host field
    std::vector<FetchConn*> idle;
  };

 private:
  friend struct FetchConn;
  Origin* origin(bool tls, const std::string& host, uint16_t port, const std::string& tls_id);
  Worker* w_;
  std::unordered_map<std::string, std::unique_ptr<Origin>> origins_;
  Origin* last_ = nullptr;  // the last call's origin, by its URL and TLS settings (the next is usually the same)
  std::string last_url_, last_tls_id_, last_target_;
};

}  // namespace px::proxy
