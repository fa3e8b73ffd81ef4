// px::proxy::Server — pxd's main thread. It owns the configuration, the
// listening sockets (created here so that a port chosen at run time is shared
// by every worker), the read-only store, DNS for upstream names, and signals.
// It builds one routing Snapshot per store generation and posts it to every
// worker; it never touches a request.
//
// Signals: SIGTERM drains (stop accepting, finish in-flight requests, close
// idle keep-alive connections, exit; past grace_period the rest are cut).
// SIGINT stops at once. SIGHUP is ignored for now (routes reload by themselves).
#pragma once
#include <uv.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/store.h"
#include "daemon/config.h"
#include "daemon/worker.h"
#include "http/server.h"
#include "observe/access_log.h"
#include "route/route.h"
#include "store/store.h"
#include "tls/cert.h"
#include "tls/context.h"

namespace px::proxy {

class Server {
 public:
  explicit Server(Config cfg);
  // How this pxd was started (for an upgrade: the same program and arguments again).
  void set_command(std::string exe, std::vector<std::string> argv) {
    exe_ = std::move(exe);
    argv_ = std::move(argv);
  }
  ~Server();
  // Runs until stopped; returns the process exit code.
  int run();

 private:
  bool open_listeners(std::vector<std::vector<ListenFd>>* per_worker, std::string* error);
  // SIGUSR2: starts the pxd binary again with this one's listening sockets; once it serves, it
  // tells this one to drain (SIGTERM). A new pxd that fails to start changes nothing.
  void upgrade();
  bool start_metrics(std::string* error);
  std::string metrics_text();
  void poll_store();
  void rebuild();
  void on_signal(int signum);
  // SIGHUP: pxd.conf again. A file that does not parse changes nothing (the log says where it is wrong).
  void reload();
  std::string status_line() const;
  static int low_port_limit();
  static bool can_bind_low_ports();  // "serving generation 42, 2 workers"
  void watchdog();                   // WATCHDOG=1 while every worker's loop turns
  void on_worker_exit();
  void publish_status();
  bool lookup(const std::string& host, uint16_t port, sockaddr_storage* ss, socklen_t* len);
  void refresh_dns();
  void watch_filters();
  void reload_filters();
  void add_cert(std::string_view key, std::string_view value, tls::CertTable* table);
  std::vector<L4Change> sync_l4_listeners(const route::Snapshot& snap);

  Config cfg_;
  std::string exe_;
  std::vector<std::string> argv_;
  std::vector<bssl::UniquePtr<SSL_CTX>> old_tls_ctxs_;  // replaced by reloads; workers may still be using them
  uv_loop_t loop_;
  uv_signal_t sigterm_, sigint_, sighup_;
  uv_timer_t poll_timer_, grace_timer_, dns_timer_, recheck_timer_, watchdog_timer_;
  uint64_t watchdog_ms_ = 0;
  uint64_t notified_gen_ = UINT64_MAX;
  std::vector<std::pair<std::string, int>> handover_;  // listen key, a dup of each listening socket
  uv_signal_t sigusr2_, sigusr1_;
  std::unique_ptr<AccessLog> access_log_;
  NameSlots route_slots_{kRouteSlots};
  NameSlots peer_slots_{kPeerSlots};
  NameSlots stream_slots_{kStreamSlots};
  // Why a route or stream does not fully serve on this host (the build's errors, a stream socket that cannot
  // be opened): name → the reasons, "; "-joined. In the status file, where pxadmind lists them with each.
  std::map<std::string, std::string> route_errors_, stream_errors_;
  std::set<std::string> l4_keys_;                                                   // stream listeners open now
  std::vector<std::pair<std::string, int>> inherited_l4_;                           // from the pxd this one replaces
  std::unordered_map<std::string, std::shared_ptr<std::atomic<int64_t>>> l4_live_;  // by stream name
  std::unique_ptr<http::Server> metrics_;
  uint64_t snapshot_time_ms_ = 0;      // uv_hrtime ms of the last install
  uv_process_t* successor_ = nullptr;  // the generation the service manager's STATUS last said
  uv_fs_event_t store_watch_;
  uv_async_t exit_async_;
  // A worker applied a snapshot: the status file says so at once (pxadmind and pxctl wait for it), not at
  // the next poll.
  uv_async_t applied_async_;
  bool watch_started_ = false;
  store::Store store_;
  std::unique_ptr<SharedTable> shared_;  // every worker's (px.shared, px.limit): outlives them
  std::unique_ptr<cache::Store> cache_;  // the response cache's files and index (cache/store.h): outlives them
  CacheTotals cache_totals();
  void write_cache_stats();
  uint64_t cache_stats_ms_ = 0;
  std::string cache_stats_text_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::shared_ptr<const route::Snapshot> snapshot_;
  uint64_t built_gen_ = UINT64_MAX;
  uint64_t published_gen_ = UINT64_MAX;
  bool store_missing_logged_ = false;
  bool draining_ = false;
  std::atomic<int> exited_{0};
  struct DnsEntry {
    bool ok = false;
    sockaddr_storage addr{};
    socklen_t len = 0;
    bool pending = false;
  };
  std::unordered_map<std::string, DnsEntry> dns_;
  struct ParsedRoute {
    std::string raw;  // the stored JSON this spec was parsed from
    std::shared_ptr<const route::RouteSpec> spec;
    uint64_t epoch = 0;  // the last build that saw it
  };
  std::unordered_map<std::string, ParsedRoute> parsed_;
  // TLS: the listeners' context, and certificates parsed once per stored value.
  bssl::UniquePtr<SSL_CTX> tls_ctx_;
  struct ParsedCert {
    std::string raw;
    std::shared_ptr<const tls::Cert> cert;  // nullptr: the record is invalid
    uint64_t epoch = 0;
  };
  std::unordered_map<std::string, ParsedCert> certs_;
  uint64_t parse_epoch_ = 0;
  int dns_pending_ = 0;
  int recheck_left_ = 0;
  // Filter files: what was last sent to the workers, and what a check of each said.
  std::map<std::string, std::string> filter_sources_;  // path -> source
  std::map<std::string, std::string> filter_errors_;   // path -> "" or the error
  std::vector<uv_fs_event_t*> filter_watches_;
  uv_timer_t filter_timer_;
  bool status_dirty_ = true;
  uint64_t published_errors_ = 0;
  bool rebuild_wanted_ = false;
};

}  // namespace px::proxy
