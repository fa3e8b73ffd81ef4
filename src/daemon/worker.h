// px::proxy — the data plane. Start here.
//
// Glossary (one meaning each, after HAProxy; each has its own header):
//   Worker    one thread with its own uv_loop, its own SO_REUSEPORT listeners,
//             its own upstream pools and peer state. Nothing on the request
//             path is shared between workers; the routing Snapshot is shared
//             read-only.
//   Session   one client connection's lifetime (keep-alive spans many streams):
//             its transport and timeouts, and its codec: HTTP/1 (each stream's
//             Downstream, downstream.h) or HTTP/2 (h2.h). session.h
//   Stream    one request/response exchange: client head → route → upstream
//             peer → response → back to keep-alive. Pooled per worker. stream.h
//   UpConn    one connection to an upstream peer; idle ones wait in the
//             peer's keep-alive pool. upconn.h
//   PeerState one upstream peer (host:port) as one worker sees it: idle pool,
//             requests in flight, passive and active health. peer.h
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

#include "core/deferred.h"
#include "core/shared_table.h"
#include "daemon/config.h"
#include "http/parser.h"
#include "l4/l4.h"
#include "lua/engine.h"
#include "net/cidr.h"
#include "net/epoll_transport.h"
#include "net/geoip.h"
#include "net/uring_transport.h"
#include "observe/access_log.h"
#include "observe/end_record.h"
#include "observe/metrics.h"
#include "observe/recorder.h"
#include "observe/trace.h"
#include "route/acl.h"
#include "route/snapshot.h"
#include "stream/fetch.h"
#include "tls/context.h"
#include "tls/transport.h"
#include "upstream/balancer.h"
#include "upstream/peer.h"

namespace px::cache {
class Store;
}

namespace px::proxy {

class Worker;
class CacheStage;
class H2Conn;
struct Session;
struct Stream;
struct UpConn;
struct HealthProbe;
enum class Timeout : uint8_t;  // session.h

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
  void set_shared(SharedTable* t) { shared_ = t; }  // px.shared and px.limit: the host's table
  // The response cache (cache/store.h): the host's store, this worker's memory for small objects and the
  // largest object stored (before start()).
  void set_cache(cache::Store* s, uint64_t memory, uint64_t max_object) {
    cache_store_ = s;
    cache_memory_ = memory;
    cache_max_object_ = max_object;
  }
  CacheStage* cache() { return cache_.get(); }  // nullptr: no cache (none configured, or it cannot run)
  // pxctl route set --record: where recorded requests go (before start()).
  void set_records(const std::string& dir) { recorder_ = std::make_unique<Recorder>(dir, shared_); }
  Recorder* recorder() { return recorder_.get(); }
  SSL_CTX* tls_ctx() const { return tls_ctx_; }
  tls::CertSource* cert_source() { return &cert_source_; }
  Session* adopt(net::Transport* t, const net::IpAddr& peer);
  void finish_inline();
  uint64_t applied_generation() const { return applied_gen_.load(std::memory_order_acquire); }
  int id() const { return id_; }

  // Worker thread side.
  uv_loop_t* loop() { return &loop_; }
  // A TCP socket's transport on this worker's I/O engine (pxd.conf io_engine: io_uring or epoll); nullptr
  // when neither could start (libuv's then).
  std::unique_ptr<net::SocketTransport> new_socket();
  // io_uring's receive buffers, per worker (pxd.conf(5)): 256 x 16 KiB = 4 MiB, shared by its sockets.
  static constexpr unsigned kUringBuffers = 256, kUringBufferSize = 16 * 1024;
  bool uring() const { return uring_.is_open(); }
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
  Fetcher& fetcher() {
    if (!fetcher_) fetcher_ = std::make_unique<Fetcher>(this);
    return *fetcher_;
  }
  // The client of filters' outbound requests (px.fetch) to host names: made on first use.
  http::Client& fetch_client() {
    if (!fetch_) {
      fetch_ = std::make_unique<http::Client>(&loop_);
      fetch_->max_body = 1024 * 1024;
    }
    return *fetch_;
  }
  SSL* new_client_ssl(const route::UpstreamTlsSpec& t, const std::string& name, const std::string& who);
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
  void h2_probe(PeerState* p);  // an HTTP/2 peer's (health.cpp)
  void health_result(PeerState* p, bool ok);
  lua::Engine* engine() { return engine_.get(); }
  uint64_t filter_errors() const { return filter_errors_.load(std::memory_order_relaxed); }
  std::atomic<uint64_t> filter_errors_{0};
  // The worker's loop last turned (uv_hrtime ms), for the service manager's watchdog (read by the main thread).
  std::atomic<uint64_t> heartbeat_ms{0};
  route::AuthCache& auth_cache() { return auth_cache_; }
  // This worker's GeoIP databases (pxd.conf geoip_database, geoip_asn_database), reopened when their files change.
  net::Geo& geo() { return geo_; }
  void post_filters(std::vector<std::pair<std::string, std::string>> files);
  // Client timeouts (see Timeout).
  void timeout_link(Session* s, Timeout t);
  void timeout_unlink(Session* s);
  // HTTP/2 connections whose streams sent something this loop iteration: their frames leave together,
  // after the iteration's I/O (h2.h).
  void defer_h2(DeferredSend* c);
  void undefer_h2(DeferredSend* c);

  std::function<void()> on_exit;     // runs on the worker thread as it ends
  std::function<void()> on_applied;  // runs on the worker thread once it serves a new snapshot
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
  // An HTTP listening socket of the worker's: libuv accepts from it (the epoll engine), or the ring does
  // (io_uring: net::UringAcceptor).
  struct Listener final : net::UringAcceptor::User {
    Worker* w = nullptr;
    ListenFd info;  // its key and flags (fd unused)
    uv_tcp_t* tcp = nullptr;
    net::UringAcceptor ring;
    uint64_t warned_ms = 0;  // the last accept error logged (one a second at most: the tick retries)
    void on_accepted(int fd) override { w->on_ring_accept(this, fd); }
    void on_accept_error(int err) override;
    void on_acceptor_closed() override;
  };
  void on_accept(Listener* l);
  void on_ring_accept(Listener* l, int fd);
  // taken: the kernel accepted it for this worker before its listener closed (io_uring's accept answers after a
  // drain began): served, with Connection: close, rather than refused.
  void accepted(Session* s, const ListenFd& l, bool taken = false);
  void close_listener(Listener* l);
  void drain();
  void stop_everything();
  void sync_health_checks();
  void probe_abandon(PeerState* p);  // the peer no longer wants its probe's result (health.cpp)
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
  net::UringSet uring_;
  std::thread thread_;
  std::vector<Listener*> listeners_;
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
  std::unique_ptr<http::Client> probes_;  // HTTP health probes (health.cpp)
  std::unique_ptr<http::Client> fetch_;   // filters' outbound requests (px.fetch) to a host name
  std::unique_ptr<Fetcher> fetcher_;      // the same, to a numeric address: kept alive (stream/fetch.h)
  SnapRef* current_ = nullptr;
  Stream* free_streams_ = nullptr;
  size_t free_stream_count_ = 0;
  // The pool's ceiling: above the streams a busy worker has in flight at once (64 HTTP/2 connections x 10
  // streams is 640), so that a steady load recycles every one; trim() keeps only the last window's peak.
  static constexpr size_t kMaxFreeStreams = 4096;
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
  std::vector<DeferredSend*> h2_deferred_;
  void run_deferred_h2();
  bool draining_ = false;
  int acceptors_closing_ = 0;  // io_uring listeners closed whose accept has not answered yet (a drain waits)
  bool stopping_ = false;
  bool inline_ = false;
  std::atomic<bool> started_{false};
  uint64_t date_sec_ = 0;
  char date_buf_[40] = {};

  SSL_CTX* tls_ctx_ = nullptr;
  std::unordered_map<std::string, bssl::UniquePtr<SSL_CTX>> client_ctx_;  // per (verify, ca_file)
  tls::CertSource cert_source_;  // the certificates of the current snapshot, for handshakes
  std::unique_ptr<lua::Engine> engine_;
  std::vector<EndObserver*> observers_;
  route::AuthCache auth_cache_;  // verified Basic credentials (route/acl.h)
  net::Geo geo_;
  SharedTable* shared_ = nullptr;
  cache::Store* cache_store_ = nullptr;
  uint64_t cache_memory_ = 0, cache_max_object_ = 0;
  std::unique_ptr<CacheStage> cache_;
  std::unique_ptr<Recorder> recorder_;
  std::string geo_error_;  // the last one logged
  void refresh_geo();
  std::mutex mu_;  // guards the mailbox below; never taken on the request path
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
