#include "stream/fetch.h"

#include <cstring>

#include "core/log.h"
#include "daemon/worker.h"
#include "http/client.h"
#include "http/client_conn.h"
#include "http/h1.h"
#include "net/cidr.h"

namespace px::proxy {

// One connection to an origin, carrying one call at a time; between calls it waits in its origin's idle list.
struct FetchConn final : http::ClientConn, net::TransportUser, http::Sink {
  Fetcher* f = nullptr;
  Fetcher::Origin* origin = nullptr;
  uv_timer_t timer{};
  http::Head head;
  http::Limits limits;
  lua::FetchResult result;
  std::string request;           // the request's bytes, kept for a retry on a new connection
  Fetcher::Done done = nullptr;  // the call's; nullptr: idle, or the call was cancelled
  Fetcher::MakeSsl make_ssl = nullptr;
  void* ctx = nullptr;
  uint64_t timeout_ms = 0;
  int closes = 0;
  bool connected = false, reused = false, got_bytes = false, complete = false, closing = false, failed_now = false;

  // false: no TLS could be made for an https origin.
  bool open(Worker* w, SSL* ssl) {
    if (origin->tls && !ssl) return false;
    if (auto t = w->new_socket())
      open_tcp(std::move(t), this);
    else
      open_tcp(w->loop(), this);
    if (ssl) start_tls(ssl, this);
    uv_timer_init(w->loop(), &timer);
    timer.data = this;
    closes = 2;
    limits.max_head = 64 * 1024;
    limits.max_headers = 256;
    parser.init(http::Kind::response, this, &limits);
    parser.attach(&head);
    return true;
  }

  void close() {
    if (closing) return;
    closing = true;
    tr->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { static_cast<FetchConn*>(h->data)->closed(); });
  }
  void closed() {
    if (--closes == 0) delete this;
  }

  void send() {
    out.ref(request);
    tr->write(out);
    tr->read_start();
  }
  void arm(uint64_t ms) {
    uv_timer_start(
        &timer, [](uv_timer_t* t) { static_cast<FetchConn*>(t->data)->fail("timeout", true); }, ms, 0);
  }

  // The call ends: its answer (or why not) goes to its owner, and the connection to the idle list or away.
  void deliver(bool keep) {
    uv_timer_stop(&timer);
    Fetcher::Done d = done;
    void* c = ctx;
    done = nullptr;
    if (keep && !closing && origin->idle.size() < Fetcher::kMaxIdle) {
      parser.resume();
      origin->idle.push_back(this);
    } else {
      close();
    }
    if (d) d(c, result);
  }
  void fail(const char* why, bool timeout) {
    if (!done) {  // idle: the server closed it, or sent something unasked
      drop_idle();
      return;
    }
    result.status = 0;
    result.timeout = timeout;
    result.error = why;
    result.head = nullptr;
    result.body.clear();
    deliver(false);
  }
  void drop_idle() {
    auto& v = origin->idle;
    for (size_t i = 0; i < v.size(); i++)
      if (v[i] == this) {
        v[i] = v.back();
        v.pop_back();
        break;
      }
    close();
  }
  // A call's owner and settings.
  void take(Fetcher::Done d, void* c, Fetcher::MakeSsl ms, uint64_t timeout) {
    done = d;
    ctx = c;
    make_ssl = ms;
    timeout_ms = timeout;
  }
  // A kept connection that the server had closed: the request goes again on a new one, once.
  bool retry_fresh();
  void dial();
  void late_fail();

  // net::TransportUser
  void on_connected() override {
    if (closing) return;
    connected = true;
    nodelay();
    if (done) send();
  }
  void on_data(const char* data, size_t len) override {
    if (closing) return;
    if (!done) {
      drop_idle();
      return;
    }
    got_bytes = true;
    http::Parsed e = parser.execute(data, len);
    if (complete) {
      bool keep = head.keep_alive && !parser.needs_eof() && parser.error_pos() == data + len;
      deliver(keep);
    } else if (e != http::Parsed::ok) {
      fail(result.body.size() > Fetcher::kMaxBody ? "the answer is larger than 1 MiB" : "invalid HTTP response", false);
    }
  }
  void on_eof() override {
    if (closing) return;
    if (done && parser.needs_eof() && parser.finish() == http::Parsed::paused && complete) {
      deliver(false);
      return;
    }
    if (done && reused && !got_bytes && retry_fresh()) return;
    fail("the connection closed before the answer was complete", false);
  }
  void on_error(int err) override {
    if (closing) return;
    if (done && reused && !got_bytes && retry_fresh()) return;
    std::string why = tls_failure();
    result.error = why.empty() ? uv_strerror(err) : "TLS: " + why;
    if (!done) {
      drop_idle();
      return;
    }
    std::string msg = (connected ? "read: " : "connect: ") + result.error;
    fail(msg.c_str(), false);
  }
  void on_drained() override {}
  void on_closed() override { closed(); }

  // http::Sink
  int on_head(http::Head& h) override {
    if (h.status < 200) return 0;  // 1xx: the answer follows
    result.status = h.status;
    result.head = &head;  // read where it was parsed (Engine::resume)
    return 0;
  }
  int on_body(const char* d, size_t n) override {
    if (result.body.size() + n > Fetcher::kMaxBody) {
      result.body.resize(Fetcher::kMaxBody + 1);
      return parser.set_error(502, "answer too large");
    }
    result.body.append(d, n);
    return 0;
  }
  int on_complete() override {
    if (result.status == 0) return 0;  // after a 1xx
    complete = true;
    return kPause;
  }
};

namespace {
std::string origin_key(bool tls, const std::string& host, uint16_t port, const std::string& tls_id) {
  return (tls ? "s:" + tls_id + " " : "p:") + host + ":" + std::to_string(port);
}
}  // namespace

Fetcher::Origin* Fetcher::origin(bool tls, const std::string& host, uint16_t port, const std::string& tls_id) {
  auto& slot = origins_[origin_key(tls, host, port, tls_id)];
  if (!slot) {
    slot = std::make_unique<Origin>();
    slot->tls = tls;
    bool v6 = host.find(':') != std::string::npos;
    slot->host = (v6 ? "[" + host + "]" : host) + (port == (tls ? 443 : 80) ? "" : ":" + std::to_string(port));
    if (v6)
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&slot->addr));
    else
      uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&slot->addr));
  }
  return slot.get();
}

FetchConn* Fetcher::start(const lua::FetchCall& c, const std::string& tls_id, MakeSsl make_ssl, Done done, void* ctx) {
  Origin* o;
  if (c.url == last_url_ && tls_id == last_tls_id_) {  // the same as the last call (a route's auth URL)
    o = last_;
  } else {
    bool tls = false;
    std::string host;
    uint16_t port = 0;
    net::IpAddr ip;
    if (!http::split_url(c.url, &tls, &host, &port, &last_target_) || !net::IpAddr::parse(host, &ip)) {
      last_url_.clear();
      return nullptr;
    }
    o = origin(tls, host, port, tls_id);
    last_ = o;
    last_url_ = c.url;
    last_tls_id_ = tls_id;
  }
  const std::string& target = last_target_;
  FetchConn* k;
  if (!o->idle.empty()) {
    k = o->idle.back();
    o->idle.pop_back();
    k->reused = true;
  } else {
    k = new FetchConn();
    k->f = this;
    k->origin = o;
    k->reused = false;
  }
  k->take(done, ctx, make_ssl, c.timeout_ms);
  k->got_bytes = k->complete = false;
  k->result.status = 0;
  k->result.head = nullptr;
  k->result.timeout = false;
  k->result.error.clear();
  k->result.body.clear();
  k->request.clear();
  http::HeadWriter wr(k->request);
  wr.request_line(c.method, target, false);
  wr.field("Host", o->host);
  k->request += c.fields;
  bool body = !c.body.empty() || c.method == "POST" || c.method == "PUT" || c.method == "PATCH";
  wr.end_request(body ? http::Framing::length : http::Framing::none, c.body.size(), "");
  k->request += c.body;
  if (k->reused) {
    k->arm(c.timeout_ms);
    k->send();
  } else {
    k->dial();
  }
  return k;
}

// A new connection for the call this one carries (a new FetchConn, or a retry's).
void FetchConn::dial() {
  SSL* ssl = origin->tls ? make_ssl(ctx) : nullptr;
  if (!open(f->w_, ssl)) {  // no TLS: nothing was opened but the timer, which tells the failure from the loop
    closing = true;
    result.error = "no TLS for this origin (see the log)";
    uv_timer_init(f->w_->loop(), &timer);
    timer.data = this;
    closes = 1;
    uv_timer_start(
        &timer, [](uv_timer_t* t) { static_cast<FetchConn*>(t->data)->late_fail(); }, 0, 0);
    return;
  }
  arm(timeout_ms);
  if (int r = connect(reinterpret_cast<const sockaddr*>(&origin->addr)); r != 0) {
    // Failed at once: the answer still comes from the loop (the timer, at once).
    result.error = std::string("connect: ") + uv_strerror(r);
    uv_timer_start(
        &timer, [](uv_timer_t* t) { static_cast<FetchConn*>(t->data)->late_fail(); }, 0, 0);
  }
}

// A failure found while starting, told from the loop.
void FetchConn::late_fail() {
  std::string why = result.error;
  if (closing) {  // never opened: only the timer to close
    Fetcher::Done d = done;
    void* c = ctx;
    done = nullptr;
    result.status = 0;
    result.head = nullptr;
    result.error = why;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { static_cast<FetchConn*>(h->data)->closed(); });
    if (d) d(c, result);
    return;
  }
  fail(why.c_str(), false);
}

bool FetchConn::retry_fresh() {
  auto* k = new FetchConn();
  k->f = f;
  k->origin = origin;
  k->take(done, ctx, make_ssl, timeout_ms);
  k->request = std::move(request);
  done = nullptr;
  uv_timer_stop(&timer);
  close();
  k->dial();
  return true;
}

void Fetcher::cancel(FetchConn* k) {
  if (!k || !k->done) return;
  k->done = nullptr;
  k->close();
}

void Fetcher::close_idle() {
  for (auto& [key, o] : origins_) {
    for (FetchConn* k : o->idle) k->close();
    o->idle.clear();
  }
}

Fetcher::~Fetcher() { close_idle(); }

}  // namespace px::proxy
