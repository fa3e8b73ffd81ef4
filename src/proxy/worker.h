// px::proxy — the data plane. Start here.
//
// Glossary (one meaning each, after HAProxy):
//   Worker    one thread with its own uv_loop, its own SO_REUSEPORT listeners,
//             its own upstream pools and peer state. Nothing on the request
//             path is shared between workers; the routing Snapshot is shared
//             read-only.
//   Session   one client connection's lifetime (keep-alive spans many streams):
//             the HTTP/1 server side, each stream's Downstream (downstream.h).
//   Stream    one request/response exchange: client head → route → upstream
//             peer → response → back to keep-alive. Pooled per worker.
//   UpConn    one connection to an upstream peer; idle ones wait in the
//             peer's keep-alive pool.
//   PeerState one upstream peer (host:port) as one worker sees it: idle pool,
//             requests in flight, passive and active health.
//   SnapRef   a worker's hold on one Snapshot, with per-worker balancer state;
//             counted by the streams that started on it, freed when the last
//             one ends after a newer snapshot arrived.
//
// Lifecycle rules (libuv): every handle that was initialised is uv_close()d and
// its memory is released only in the close callback; handles never move.
#pragma once
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "http/h1.h"
#include "http/parser.h"
#include "lua/engine.h"
#include "net/cidr.h"
#include "net/epoll_transport.h"
#include "net/output.h"
#include "net/uv_transport.h"
#include "proxy/access_log.h"
#include "proxy/balancer.h"
#include "proxy/config.h"
#include "proxy/downstream.h"
#include "proxy/end_record.h"
#include "proxy/l4.h"
#include "proxy/metrics.h"
#include "proxy/trace.h"
#include "route/acl.h"
#include "route/snapshot.h"
#include "tls/client_hello.h"
#include "tls/context.h"
#include "tls/transport.h"

namespace px::proxy {

class Worker;
class H2Conn;
struct Session;
struct Stream;
struct UpConn;
struct HealthProbe;
void probe_abandon(HealthProbe* hp);  // the peer no longer wants this probe's result (health.cpp)

// A listening socket handed to a worker: which listen line it serves (listen_key()), and whether TLS.
struct ListenFd {
  std::string key;
  int fd = -1;
  bool tls = false;
  bool udp = false;    // an L4 stream's UDP socket
  bool proxy = false;  // connections open with a PROXY header (net/proxy_in.h)
  bool h2c = false;    // cleartext: HTTP/2 with prior knowledge is taken too
  bool h2 = true;      // TLS: ALPN may pick h2
};
// L4 stream listeners to open (their fds, owned by the worker from then on) and to close (by key),
// posted with the snapshot that has their streams.
struct L4Change {
  std::vector<ListenFd> add;
  std::vector<std::string> remove;
};

struct PeerState {
  std::string key;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  bool resolved = false;
  UpConn* idle = nullptr;  // keep-alive pool (intrusive list)
  bool tls = false;        // https://
  route::UpstreamTlsSpec tls_spec;
  std::string host;                      // for SNI and the certificate check
  bssl::UniquePtr<SSL_SESSION> session;  // the last TLS session, to resume with
  uint32_t idle_count = 0;
  uint32_t active = 0;      // streams using this peer now (least_conn)
  uint32_t fails = 0;       // consecutive failures (passive health)
  uint64_t down_until = 0;  // uv_now() ms; passive health cool-down
  // Active health checks (when a route's pool asks for them).
  bool hc_enabled = false;
  bool hc_tcp = false;  // an L4 stream's peer: a probe is a TCP connect
  bool hc_down = false;
  uint32_t hc_ok = 0, hc_bad = 0;
  route::HealthCheckSpec hc;
  std::string hc_host;
  uv_timer_t* hc_timer = nullptr;
  HealthProbe* probe = nullptr;
  uint16_t metrics_slot = 0;  // proxy/metrics.h
  bool usable(uint64_t now) const { return resolved && !hc_down && now >= down_until; }
};

struct PoolView {
  const route::Route* route = nullptr;
  std::vector<PeerState*> peers;
  std::vector<int64_t> current;  // smooth weighted round robin state
};

struct SnapRef {
  std::shared_ptr<const route::Snapshot> snap;
  std::vector<PoolView> pools;   // parallel to snap->routes()
  std::vector<uint16_t> masks;   // per route: the filter phases its chain implements (lua::Engine)
  std::vector<L4Pool> l4_pools;  // parallel to snap->streams()
  uint32_t refs = 0;
  bool retired = false;
};

// Client-side timeouts. Each kind has one duration, so a per-worker FIFO list
// per kind stays sorted by deadline: arming is O(1), expiry walks only what expired.
enum class Timeout : uint8_t { none, header, body, keepalive, handshake };

struct Stream {
  Worker* w = nullptr;         // the worker whose pool holds this stream (set once)
  Downstream* down = nullptr;  // the client side (downstream.h)
  Stream* next_free = nullptr;
  http::Parser parser;  // the request parser: lives with the stream, not the idle session
  http::Head req;
  http::Head resp;
  net::Output out;           // towards the client: the downstream's buffer while the stream is its current one
  std::string up_head;       // request head towards the upstream (kept for a retry)
  std::string pending_body;  // request body that arrived before the upstream was ready
  SnapRef* snap = nullptr;
  const route::Route* route = nullptr;
  PoolView* pool = nullptr;
  UpConn* up = nullptr;
  PeerState* peer = nullptr;
  net::IpAddr client_ip;  // real client (behind trusted proxies)
  uint64_t tried = 0;     // bitmask of peers tried
  uint64_t body_received = 0;
  uint64_t max_body = 0;
  uint64_t start_ms = 0;
  // Upstream timing, kept only while metrics are on (Worker::timing()): µs, -1 for none.
  uint64_t up_sent_us = 0;                       // when the request head went to the upstream
  int32_t connect_us = -1;                       // this stream's new upstream connection took this long (TLS included)
  int32_t ttfb_us = -1;                          // request sent → the upstream's first byte
  http::Framing req_body = http::Framing::none;  // none, a known length, or not known (chunked)
  uint16_t status = 0;                           // status sent to the client
  uint8_t attempts = 0;
  uint8_t request_id_len = 0;  // X-Request-ID sent upstream (kept from a trusted proxy, or made here)
  char request_id[64];
  bool fresh_retry_used = false;  // the same peer was retried once on a new connection (retry.h)
  bool req_complete = false;
  bool resp_head_sent = false;
  bool resp_complete = false;
  bool local = false;  // answered by px itself, the request body is discarded
  bool head_request = false;
  bool body_bytes_sent = false;  // some request body byte went to the upstream
  bool up_written = false;       // the request head went to the upstream
  bool upgrade = false;          // request asked for an Upgrade
  bool tunnel = false;           // 101 passed: bytes flow raw both ways
  bool interim = false;          // current upstream message is a 1xx
  std::string_view abs_path;     // path of an absolute-form target (into req.buf)
  std::string_view host;         // Host (or the absolute-form authority), into req.buf
  uint16_t mask = 0;             // filter phases of this stream's route
  bool filter_failed = false;    // a response-phase filter failed: answer 500
  bool term_set = false;
  Termination term = Termination::ok;  // why it ended (the first cause recorded)
  uint64_t bytes_in = 0;               // request bytes read from the client
  uint64_t bytes_out = 0;              // bytes written to the client
  uint32_t phase_us[lua::kPhases] = {};
  lua::RequestView view;         // what filters see, and their state (only for routes with filters)
  std::unique_ptr<Trace> trace;  // pxctl trace (trace.h): only for a request with a valid token
  net::IpAddr peer_text_of;      // a cache, kept across reuse: the client address last formatted for X-Forwarded-For
  char peer_text[46];
  uint8_t peer_text_len = 0;
  void end_as(Termination t) {
    if (!term_set) term = t, term_set = true;
  }
  void reset();
};

// Bytes a session read but has not parsed yet (pipelined requests, tunnel data
// that arrived early). Usually there are none: the buffer exists only while
// needed, so an idle connection pays one pointer for it.
class Pending {
 public:
  bool empty() const { return !s_ || s_->empty(); }
  size_t size() const { return s_ ? s_->size() : 0; }
  const char* data() const { return s_->data(); }
  void append(const char* p, size_t n) {
    if (!s_) s_ = std::make_unique<std::string>();
    s_->append(p, n);
  }
  void erase_front(size_t n) { s_->erase(0, n); }
  void clear() { s_.reset(); }  // and free the buffer
  std::string_view view() const { return s_ ? std::string_view(*s_) : std::string_view(); }

 private:
  std::unique_ptr<std::string> s_;
};

// The HTTP/1 server side of one client connection: it reads requests through
// the parser, gives each to a stream, and is that stream's Downstream (keep-alive,
// pipelining, Expect, framing of responses, the upgrade hand-off, timeouts).
// (Downstream first: its calls need no thunk.)
struct Session final : Downstream, http::Sink, net::TransportUser, tls::HelloDecider {
  net::UvTransport tcp;                      // the accepted connection (unused when `tr` is another transport)
  net::Transport* tr = &tcp;                 // what the session reads from and writes to
  std::unique_ptr<net::Transport> wrap;      // TLS over tcp, on a TLS listener (tr points at it)
  std::unique_ptr<net::Transport> proxy_in;  // PROXY header reader over tcp (below TLS), on such a listener
  std::unique_ptr<net::Transport> peek;      // ClientHello reader below TLS, while passthrough routes exist
  Worker* w = nullptr;
  Session* prev = nullptr;  // the worker's list of sessions
  Session* next = nullptr;
  Session* tprev = nullptr;  // the worker's list for `timeout`
  Session* tnext = nullptr;
  uint64_t deadline = 0;
  Stream* stream = nullptr;
  Pending leftover;  // bytes read but not parsed yet (pipelining, tunnel data)
  Timeout timeout = Timeout::none;
  http::Framing resp_framing = http::Framing::none;  // of the response being relayed
  bool got_bytes = false;                            // any byte ever arrived on this connection
  bool want_read = true;                             // false while a request waits for its response
  bool bp_paused = false;                            // stopped because the upstream write queue is full
  bool in_parse = false;
  bool close_after = false;  // close when the current response is out
  bool head_left = false;    // the current response's head was written to the transport
  bool closing = false;
  bool eof = false;
  bool writes_done_close = false;  // close once the write queue drains
  bool counted = false;            // in the worker's list of sessions
  bool h2_allowed = false;         // the listener takes HTTP/2 (TLS: by ALPN; cleartext: h2c prior knowledge)
  bool h2_decided = false;         // cleartext: the first bytes said which protocol
  H2Conn* h2 = nullptr;            // the HTTP/2 codec, when the connection speaks it (h2.h)

  // net::TransportUser (the client connection)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;  // TLS: the handshake is done
  void on_closed() override;
  // tls::HelloDecider: a passthrough route for this SNI takes the connection (l4.h).
  bool on_client_hello(std::string_view sni, std::string_view hello) override;

  // http::Sink (the request parser)
  int on_head(http::Head& h) override;
  int on_body(const char* data, size_t len) override;
  int on_complete() override;

  // Downstream (the stream's client side)
  void send_head(Stream* st, const ResponseHead& h) override;
  void send_body(Stream* st, const char* data, size_t len) override;
  void send_end(Stream* st) override;
  void send_reply(Stream* st, int status, const Fields* fields, std::string_view body) override;
  bool continue_request(Stream* st) override;
  void abandon_request(Stream*) override { close_after = true; }
  bool flush(Stream* st) override;
  void progress(Stream* st) override;
  void reset(Stream* st) override;
  bool retract(Stream* st) override;
  void pause_request(Stream*) override;
  void resume_request(Stream*) override;
  void open_tunnel(Stream* st, const char* early, size_t len) override;
  bool congested() const override { return tr->congested(); }

  bool advancing_ = false;
  bool again_ = false;

  void start();
  void parse(const char* data, size_t len, bool from_leftover);
  void update_reading();
  void finish_stream();
  void after_event();  // finish what finished, parse what waits, re-arm reading
  void close();
  void close_when_written();
  void set_timeout(Timeout t);
  void on_timeout(Timeout t);
  int parser_fail(int status, const char* reason);
  bool idle() const;
  void start_h2();
};

struct UpConn final : http::Sink, net::TransportUser {
  net::UvTransport tcp;
  net::Transport* tr = &tcp;
  std::unique_ptr<net::Transport> wrap;  // TLS over tcp, for https:// peers (tr points at it)
  uv_timer_t timer;
  Worker* w = nullptr;
  PeerState* peer = nullptr;
  Stream* stream = nullptr;
  UpConn* prev = nullptr;  // in the peer's idle list
  UpConn* next = nullptr;
  http::Parser parser;
  net::Output out;
  uint8_t pending_closes = 0;
  enum class State : uint8_t { connecting, active, idle, closing } state = State::connecting;
  bool reused = false;
  bool got_bytes = false;  // some response byte arrived
  bool bp_paused = false;
  bool eof = false;
  uint64_t connect_start_us = 0;  // when the connect began (only while metrics are on)
  uint64_t requests = 0;
  uint64_t deadline = 0;   // loop time (ms) of the current timeout; 0: none
  uint64_t armed_for = 0;  // when the uv timer fires; 0: not armed

  int on_head(http::Head& h) override;
  int on_body(const char* data, size_t len) override;
  int on_complete() override;

  // net::TransportUser (the upstream connection)
  void on_data(const char* data, size_t len) override;
  void on_eof() override;
  void on_error(int err) override;
  void on_drained() override;
  void on_connected() override;
  void on_closed() override;

  void ended(bool error);  // the upstream stopped sending (EOF or an error)
  void start_reading();
  void close();
  void arm_timer(uint64_t ms);  // 0: no timeout
  void on_timer();
  void on_timeout();
};

// ---- the stream (stream.cpp): one exchange, knowing no wire format ----

// The request head arrived (the downstream filled st->req, req_body, head_request,
// upgrade): the phases, routing, limits, and the upstream exchange.
void stream_begin(Stream* st);
// A piece of the request body. unwanted: px answered already (the downstream may
// drop it); too_large: over the route's limit (413).
enum class BodyTake : uint8_t { taken, unwanted, too_large };
BodyTake stream_body(Stream* st, const char* data, size_t len);
void stream_body_end(Stream* st);  // the request is complete
// px's own answer (running the response phase first). drop_body: the rest of
// the request body will not be read.
void reply(Stream* st, int status, const Fields* fields, std::string_view body, bool drop_body);
void reply_text(Stream* st, int status, std::string_view text, bool drop_body);
// The upstream's answer, relayed (the upstream side calls these; the stream runs the response phase and hands
// the result to its Downstream). false: a response filter failed (the stream answers 500 if nothing left yet).
bool stream_response_head(Stream* st, const http::Head& h);
inline void stream_response_body(Stream* st, const char* data, size_t len) {  // by reference, until the flush
  st->down->send_body(st, data, len);
}
inline void stream_response_end(Stream* st) {
  st->resp_complete = true;
  st->down->send_end(st);
}
// The one place a stream ends: its end record, the logging phase and the
// observers, then the stream goes back to the pool. cut: its connection is closing.
void end_stream(Stream* st, bool cut);

// Runs one filter phase for a stream, timing it into the stream's end record.
lua::Verdict run_phase(lua::Engine* eng, lua::Phase p, int route_index, Stream* st, const http::Head* resp = nullptr,
                       int status = 0);

class Worker {
 public:
  Worker(int id, const Config& cfg);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Main thread side. Listening fds are owned by the worker from here on.
  // listen_fds: one key (listen_key(): an opaque identity) may come with several sockets.
  void start(std::vector<ListenFd> listen_fds);
  void post_snapshot(std::shared_ptr<const route::Snapshot> s, L4Change l4 = {});
  // A reloaded pxd.conf (SIGHUP): the new settings for new connections, listeners to open (their fds,
  // owned by the worker from here on) and to close (by listen_key), and the TLS context to use.
  struct Reconfig {
    Config cfg;
    std::vector<ListenFd> add;
    std::vector<std::string> remove;
    SSL_CTX* tls_ctx = nullptr;
  };
  void post_config(Reconfig r);
  void post_drain();
  void post_stop();
  void join();
  // For unit tests: the loop runs on the caller's thread (uv_run(loop(), ...)),
  // without Lua filters; adopt() makes a session over any transport (an
  // in-memory one: net/memory_transport.h); finish_inline() closes everything.
  void start_inline();
  // TLS listeners: the context every worker shares (tls/context.h). Before start().
  void set_tls(SSL_CTX* ctx) { tls_ctx_ = ctx; }
  SSL_CTX* tls_ctx() const { return tls_ctx_; }
  tls::CertSource* cert_source() { return &cert_source_; }
  Session* adopt(net::Transport* t, const net::IpAddr& peer);
  void finish_inline();
  uint64_t applied_generation() const { return applied_gen_.load(std::memory_order_acquire); }
  int id() const { return id_; }

  // Worker thread side.
  uv_loop_t* loop() { return &loop_; }
  net::EpollSet* epoll() { return &epoll_; }  // L4 streams' sockets (net/epoll_transport.h)
  const Config& cfg() const { return cfg_; }
  uint64_t now() { return uv_now(&loop_); }
  std::string_view date();  // now, as an HTTP date (IMF-fixdate), cached per second
  // A new request ID: 32 hex digits, a random per-worker prefix and a counter (unique, unguessable enough
  // to correlate logs, not a secret).
  void new_request_id(char out[32]);

  Stream* get_stream();
  void put_stream(Stream* s);
  void release_snap(SnapRef* r);
  SnapRef* current_snap() { return current_; }
  PeerState* peer_for(const route::PeerAddr& a);
  // A client-side SSL for a connection to an https:// peer: verification, SNI, a session to resume.
  SSL* new_upstream_ssl(PeerState* p);
  // Picks a usable peer of the stream's pool, skipping the ones it tried. nullptr: none left.
  PeerState* choose_peer(Stream* st);
  bool has_untried(const Stream* st);  // a usable peer this stream has not tried yet?
  UpConn* take_idle(PeerState* p);
  void park_idle(UpConn* c);
  void unpark(UpConn* c);
  void peer_failed(PeerState* p);
  void peer_ok(PeerState* p);
  void session_closed(Session* s);
  // L4 connections (l4.h): the worker's list, for draining and stopping.
  void l4_link(L4Conn* c);
  void l4_unlink(L4Conn* c);
  uint64_t l4_conns() const { return l4_open.get(); }
  bool draining() const { return draining_; }
  void maybe_finish_drain();
  void health_probe(PeerState* p);
  void health_result(PeerState* p, bool ok);
  lua::Engine* engine() { return engine_.get(); }
  uint64_t filter_errors() const { return filter_errors_.load(std::memory_order_relaxed); }
  std::atomic<uint64_t> filter_errors_{0};
  // The worker's loop last turned (uv_hrtime ms), for the service manager's watchdog (read by the main thread).
  std::atomic<uint64_t> heartbeat_ms{0};
  route::AuthCache& auth_cache() { return auth_cache_; }
  void post_filters(std::vector<std::pair<std::string, std::string>> files);
  // Client timeouts (see Timeout).
  void timeout_link(Session* s, Timeout t);
  void timeout_unlink(Session* s);
  // HTTP/2 connections whose streams sent something this loop iteration: their frames leave together,
  // after the iteration's I/O (h2.h).
  void defer_h2(H2Conn* c);
  void undefer_h2(H2Conn* c);

  std::function<void()> on_exit;  // runs on the worker thread as it ends
  // End records (end_record.h): observers are called in order for every stream.
  void add_observer(EndObserver* o) { observers_.push_back(o); }
  // The access log's observer for this worker (before start()).
  // Metrics (before start()): this worker's counters, read by the main thread's scrapes.
  void set_metrics(std::unique_ptr<WorkerMetrics> m) {
    metrics_ = std::move(m);
    add_observer(metrics_.get());
  }
  WorkerMetrics* metrics() { return metrics_.get(); }
  // Upstream connect and first-byte times are measured (a clock read each) only for metrics.
  bool timing() const { return metrics_ != nullptr; }
  // pxctl trace (trace.h): the key tokens are checked with, and where records go. Before start().
  void set_trace(const TraceKey& key, std::string dir) {
    trace_key_ = key;
    trace_dir_ = std::move(dir);
  }
  bool trace_enabled() const { return !trace_dir_.empty(); }
  const TraceKey& trace_key() const { return trace_key_; }
  const std::string& trace_dir() const { return trace_dir_; }
  static uint64_t clock_us() { return uv_hrtime() / 1000; }
  void set_access_log(std::unique_ptr<AccessLogObserver> o) {
    access_observer_ = std::move(o);
    add_observer(access_observer_.get());
  }
  const std::vector<EndObserver*>& observers() const { return observers_; }
  // Does any observer read an end record's client address (metrics do not)?
  bool clients_observed() const { return observers_.size() > (metrics_ ? 1u : 0u); }
  bool stopping() const { return stopping_; }
  http::Limits req_limits;
  http::Limits resp_limits;
  // Open connections and handshake counts: written by this worker only, read by scrapes.
  MetricCounter sessions, upconns, l4_open;
  MetricCounter tls_handshakes, tls_handshake_timeouts;
  MetricCounter tls_handshake_failures[tls::kHandshakeFailures];  // by tls::HandshakeFailure

 private:
  void run();
  void on_async();
  void wake_locked();
  void install(std::shared_ptr<const route::Snapshot> s);
  void on_accept(uv_stream_t* server);
  void drain();
  void stop_everything();
  void sync_health_checks();
  void on_tick();
  void publish_metrics(uint64_t now);
  void trim();
  void teardown();
  void begin_session(Session* s);
  void apply_config(Reconfig r);
  void apply_timeouts();
  void add_listener(const ListenFd& l);

  int id_;
  Config cfg_;
  uv_loop_t loop_;
  uv_async_t async_;
  net::EpollSet epoll_;
  std::thread thread_;
  std::vector<uv_tcp_t*> listeners_;
  std::vector<L4Listener*> l4_listeners_;
  L4Conn* l4_head_ = nullptr;
  std::vector<L4Change> mail_l4_;
  void apply_l4(L4Change& ch);
  std::vector<ListenFd> fds_;
  std::unique_ptr<AccessLogObserver> access_observer_;
  std::unique_ptr<WorkerMetrics> metrics_;
  uint64_t last_filter_stats_ = 0;
  TraceKey trace_key_{};
  std::string trace_dir_;
  lua::FilterStats filter_scratch_;
  char rid_prefix_[16] = {};
  uint64_t rid_counter_ = 0;
  std::unordered_map<std::string, std::unique_ptr<PeerState>> peers_;
  SnapRef* current_ = nullptr;
  Stream* free_streams_ = nullptr;
  size_t free_stream_count_ = 0;
  static constexpr size_t kMaxFreeStreams = 256;  // the pool's ceiling
  static constexpr uint64_t kTrimWindowMs = 1000;
  static constexpr uint64_t kDrainIdleMs = 250;   // draining: idle keep-alive connections close after this
  size_t streams_in_use_ = 0, streams_peak_ = 0;  // the peak within the current trim window
  uint64_t upconns_peak_ = 0;
  uint64_t last_trim_ = 0, last_malloc_trim_ = 0;
  Session* sessions_head_ = nullptr;
  std::vector<PeerLoad> load_;  // scratch for choose_peer
  uint64_t rotate_ = 0;
  struct TimeoutList {
    Session* head = nullptr;
    Session* tail = nullptr;
    uint64_t duration = 0;
  } tlists_[5];
  uv_timer_t tick_;
  uv_check_t h2_check_;  // runs the deferred HTTP/2 sends after I/O
  uv_idle_t h2_idle_;    // ... and keeps the poll from blocking while some wait (a timer asked for them)
  std::vector<H2Conn*> h2_deferred_;
  void run_deferred_h2();
  bool draining_ = false;
  bool stopping_ = false;
  bool inline_ = false;
  std::atomic<bool> started_{false};
  uint64_t date_sec_ = 0;
  char date_buf_[40] = {};

  SSL_CTX* tls_ctx_ = nullptr;
  std::unordered_map<std::string, bssl::UniquePtr<SSL_CTX>> client_ctx_;  // per (verify, ca_file)
  tls::CertSource cert_source_;          // the certificates of the current snapshot, for handshakes
  std::vector<ListenFd> listener_info_;  // parallel to listeners_: each one's key and flags (fd unused)
  std::unique_ptr<lua::Engine> engine_;
  std::vector<EndObserver*> observers_;
  route::AuthCache auth_cache_;  // verified Basic credentials (route/acl.h)
  std::mutex mu_;                // guards the mailbox below; never taken on the request path
  std::vector<std::pair<std::string, std::string>> mail_filters_;
  bool mail_has_filters_ = false;
  std::shared_ptr<const route::Snapshot> mail_snap_;
  bool mail_drain_ = false;
  bool mail_stop_ = false;
  std::unique_ptr<Reconfig> mail_config_;
  bool ended_ = false;  // the loop closed its async handle (guarded by mu_)
  std::atomic<uint64_t> applied_gen_{0};

  friend struct Session;
};

}  // namespace px::proxy
