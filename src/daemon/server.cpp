#include "daemon/server.h"
#include "stream/cache.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "core/log.h"
#include "core/notify.h"
#include "http/h1.h"
#include "lua/engine.h"
#include "route/route.h"

#include <nlohmann/json.hpp>

extern char** environ;

namespace px::proxy {

Server::Server(Config cfg) : cfg_(std::move(cfg)) {}
Server::~Server() = default;

// client_first: what connects speaks first (HTTP, TLS, a PROXY header), unlike an L4 stream's protocol may.
static int make_listener(const ListenAddr& la, uint16_t port, std::string* error, bool udp = false,
                         bool client_first = true) {
  sockaddr_storage ss{};
  socklen_t len;
  bool v6 = la.host.find(':') != std::string::npos;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, la.host.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, la.host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  int fd = socket(v6 ? AF_INET6 : AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // Accepted connections inherit TCP_NODELAY from the listener: one system call less per connection.
  if (!udp) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // HTTP and TLS: the client speaks first (its request, its ClientHello, a balancer's PROXY header), so the
  // kernel hands over a connection only once that arrived: one wakeup and one empty read less per
  // connection. A client that sends nothing is handed over after the kernel's SYN-ACK retransmission, and
  // the header (or handshake) timeout applies from there. (Not for L4 streams: their protocol may have the
  // server speak first.)
  if (!udp && client_first) setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || (!udp && listen(fd, 4096) != 0)) {
    *error = "listen " + la.str() + (udp ? "/udp" : "") + ": " + strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// Sockets handed over at start: by the pxd this one replaces (PX_INHERIT_FDS sockets from fd 3, their
// listen keys in PX_LISTEN_KEYS, one per line), or by systemd's socket activation (LISTEN_PID,
// LISTEN_FDS), matched to listen lines by address.
static std::vector<std::pair<std::string, int>> inherited_sockets() {
  std::vector<std::pair<std::string, int>> out;
  const char* n = getenv("PX_INHERIT_FDS");
  if (n) {
    std::string keys = getenv("PX_LISTEN_KEYS") ? getenv("PX_LISTEN_KEYS") : "";
    int count = atoi(n);
    size_t pos = 0;
    for (int i = 0; i < count; i++) {
      size_t nl = keys.find('\n', pos);
      out.emplace_back(keys.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos), 3 + i);
      pos = nl == std::string::npos ? keys.size() : nl + 1;
    }
  } else if (getenv("LISTEN_PID") && atol(getenv("LISTEN_PID")) == getpid() && getenv("LISTEN_FDS")) {
    int count = atoi(getenv("LISTEN_FDS"));
    for (int i = 0; i < count; i++) out.emplace_back("", 3 + i);
  }
  for (const char* v : {"PX_INHERIT_FDS", "PX_LISTEN_KEYS", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}) unsetenv(v);
  for (auto& [key, fd] : out) fcntl(fd, F_SETFD, FD_CLOEXEC);
  return out;
}

static bool same_address(int fd, const ListenAddr& la) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  char host[INET6_ADDRSTRLEN] = "";
  uint16_t port;
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  }
  char want[INET6_ADDRSTRLEN] = "";
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET6, la.host.c_str(), &a6) == 1)
    inet_ntop(AF_INET6, &a6, want, sizeof want);
  else if (inet_pton(AF_INET, la.host.c_str(), &a4) == 1)
    inet_ntop(AF_INET, &a4, want, sizeof want);
  return la.port != 0 && port == la.port && strcmp(host, want) == 0;
}

static uint16_t bound_port(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

bool Server::open_listeners(std::vector<std::vector<ListenFd>>* per_worker, std::string* error) {
  per_worker->assign(workers_.size(), {});
  auto inherited = inherited_sockets();
  for (const auto& la : cfg_.listen) {
    std::string key = listen_key(la);
    // Inherited sockets for this line: every one is used (their accept queues hold connections).
    std::vector<int> mine;
    for (auto& [k, fd] : inherited)
      if (fd >= 0 && (k.empty() ? same_address(fd, la) : k == key)) {
        mine.push_back(fd);
        fd = -1;
      }
    uint16_t port = la.port;
    if (!mine.empty()) {
      port = bound_port(mine[0]);
      int one = 1;  // systemd's sockets may lack them (see make_listener)
      for (int fd : mine) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof one);
      }
      for (size_t i = 0; i < std::max(mine.size(), workers_.size()); i++) {
        int fd = i < mine.size() ? mine[i] : dup(mine[i % mine.size()]);
        (*per_worker)[i % workers_.size()].push_back({key, fd, la.tls, false, la.proxy, la.h2c, !la.http1_only});
      }
    } else {
      for (size_t w = 0; w < workers_.size(); w++) {
        int fd = make_listener(la, port, error);
        if (fd < 0) return false;
        if (port == 0) port = bound_port(fd);
        (*per_worker)[w].push_back({key, fd, la.tls, false, la.proxy, la.h2c, !la.http1_only});
      }
    }
    ListenAddr actual = la;
    actual.port = port;
    // Tests and scripts wait for this line to learn a port chosen at run time.
    PX_INFO("listening on %s%s%s%s%s", actual.str().c_str(),
            la.tls ? (la.http1_only ? " (tls, http/1.1)" : " (tls)") : "", la.proxy ? " (proxy_protocol)" : "",
            la.h2c ? " (h2c)" : "", mine.empty() ? "" : " (inherited)");
  }
  for (auto& [k, fd] : inherited)
    if (fd >= 0 && k.rfind("stream ", 0) == 0) {
      inherited_l4_.emplace_back(k, fd);  // for the first build that has the stream
      fd = -1;
    }
  for (auto& [k, fd] : inherited)
    if (fd >= 0) {
      PX_WARN("an inherited socket (fd %d) matches no listen line: closed", fd);
      close(fd);
    }
  // A copy of every listening socket, for the pxd that replaces this one (SIGUSR2).
  for (auto& w : *per_worker)
    for (auto& l : w) handover_.emplace_back(l.key, fcntl(l.fd, F_DUPFD_CLOEXEC, 3));
  return true;
}

bool Server::lookup(const std::string& host, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  *ss = sockaddr_storage{};
  auto* a4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    *len = sizeof *a4;
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    *len = sizeof *a6;
    return true;
  }
  auto it = dns_.find(host);
  if (it == dns_.end() || !it->second.ok) return false;
  *ss = it->second.addr;
  *len = it->second.len;
  if (ss->ss_family == AF_INET)
    a4->sin_port = htons(port);
  else
    a6->sin6_port = htons(port);
  return true;
}

namespace {
struct DnsReq {
  uv_getaddrinfo_t req;
  Server* server;
  std::string host;
};

// One more reason why `name` does not fully serve, after the ones it has ("; " between them).
void add_error(std::map<std::string, std::string>* errors, const std::string& name, const std::string& why) {
  std::string& e = (*errors)[name];
  e += (e.empty() ? "" : "; ") + why;
}
}  // namespace

void Server::rebuild() {
  uint64_t t0 = uv_hrtime();
  std::vector<std::shared_ptr<const route::RouteSpec>> specs;
  uint64_t gen = 0;
  std::string err;
  std::vector<std::string> bad;
  // Routes whose stored bytes did not change since the last build are not parsed
  // again, and their specs are shared, not copied: with 10,000 routes that was
  // most of a build's cost.
  parse_epoch_++;
  route::SnapshotExtras extras;
  auto certs = std::make_shared<tls::CertTable>();
  certs->set_default(cfg_.tls_default_certificate);
  bool ok = store_.read(
      [&](store::Store::Txn& t, std::string* e) {
        std::string gv;
        bool found;
        if (!t.get(store::keys::kGeneration, &gv, &found, e)) return false;
        gen = found ? store::keys::decode_generation(gv) : 0;
        bool r1 = t.scan(
            store::keys::kRoute,
            [&](std::string_view key, std::string_view value) {
              thread_local std::string k;
              k.assign(key);
              auto it = parsed_.find(k);
              if (it != parsed_.end() && it->second.raw == value) {
                it->second.epoch = parse_epoch_;
                specs.push_back(it->second.spec);
                return true;
              }
              auto r = std::make_shared<route::RouteSpec>();
              std::string pe;
              if (route::parse_route_json(value, r.get(), &pe)) {
                specs.push_back(r);
                parsed_[k] = ParsedRoute{std::string(value), std::move(r), parse_epoch_};
              } else {
                bad.push_back(std::string(key) + ": " + pe);
              }
              return true;
            },
            e);
        bool r2 = r1 && t.scan(
                            store::keys::kAcl,
                            [&](std::string_view key, std::string_view value) {
                              route::AclSpec a;
                              std::string pe;
                              if (route::parse_acl_spec(value, &a, &pe))
                                extras.acls.push_back(std::move(a));
                              else
                                bad.push_back(std::string(key) + ": " + pe);
                              return true;
                            },
                            e);
        bool r3 = r2 && t.scan(
                            store::keys::kChallenge,
                            [&](std::string_view key, std::string_view value) {
                              extras.challenges.emplace_back(std::string(key.substr(store::keys::kChallenge.size())),
                                                             std::string(value));
                              return true;
                            },
                            e);
        bool r4 = r3 && t.scan(
                            store::keys::kStream,
                            [&](std::string_view key, std::string_view value) {
                              auto sp = std::make_shared<route::StreamSpec>();
                              std::string pe;
                              if (route::parse_stream_json(value, sp.get(), &pe))
                                extras.streams.push_back(std::move(sp));
                              else
                                bad.push_back(std::string(key) + ": " + pe);
                              return true;
                            },
                            e);
        bool r5 = r4 && t.scan(
                            store::keys::kCachePurge,
                            [&](std::string_view key, std::string_view value) {
                              std::vector<route::CachePurge> ps;
                              if (route::parse_purges(value, &ps))
                                extras.purges[std::string(key.substr(store::keys::kCachePurge.size()))] = std::move(ps);
                              else
                                bad.push_back(std::string(key) + ": not a list of purges");
                              return true;
                            },
                            e);
        return r5 && t.scan(
                         store::keys::kCert,
                         [&](std::string_view key, std::string_view value) {
                           add_cert(key, value, certs.get());
                           return true;
                         },
                         e);
      },
      &err);
  std::erase_if(parsed_, [&](const auto& kv) { return kv.second.epoch != parse_epoch_; });
  std::erase_if(certs_, [&](const auto& kv) { return kv.second.epoch != parse_epoch_; });
  extras.certs = std::move(certs);
  if (!ok) {
    PX_ERR("%s", err.c_str());
    return;
  }
  for (const auto& b : bad) PX_ERR("store: skipping invalid %s", b.c_str());
  // Names not yet resolved: resolve them (off the loop, in libuv's pool) and build when all answered.
  bool waiting = false;
  std::vector<std::pair<const std::string*, uint16_t>> names;
  for (const auto& r : specs)
    for (const auto& u : r->upstreams) names.emplace_back(&u.host, u.port);
  for (const auto& s : extras.streams)
    for (const auto& u : s->upstreams) names.emplace_back(&u.host, u.port);
  for (const auto& [host_ptr, port] : names) {
    const std::string& host = *host_ptr;
    sockaddr_storage ss;
    socklen_t len;
    if (lookup(host, port, &ss, &len)) continue;
    auto& e = dns_[host];
    if (e.pending) {
      waiting = true;
      continue;
    }
    if (e.len != 0 || e.ok) continue;  // resolved before and failed: build without it
    e.pending = true;
    waiting = true;
    dns_pending_++;
    auto* dr = new DnsReq{{}, this, host};
    dr->req.data = dr;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(
        &loop_, &dr->req,
        [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
          auto* dr = static_cast<DnsReq*>(req->data);
          Server* s = dr->server;
          auto& e = s->dns_[dr->host];
          e.pending = false;
          e.len = 1;  // marks "answered"
          e.ok = false;
          if (status == 0 && res) {
            std::memcpy(&e.addr, res->ai_addr, res->ai_addrlen);
            e.len = res->ai_addrlen;
            e.ok = true;
          } else {
            PX_WARN("cannot resolve upstream host %s: %s", dr->host.c_str(), uv_strerror(status));
          }
          if (res) uv_freeaddrinfo(res);
          s->dns_pending_--;
          delete dr;
          if (s->dns_pending_ == 0) {
            s->built_gen_ = UINT64_MAX;
            s->poll_store();
          }
        },
        host.c_str(), nullptr, &hints);
    if (rc != 0) {
      e.pending = false;
      e.len = 1;
      dns_pending_--;
      delete dr;
    }
  }
  if (waiting) return;
  route::BuildWarnings warnings;
  auto snap = route::Snapshot::build(
      gen, std::move(specs), cfg_,
      [this](const std::string& h, uint16_t p, sockaddr_storage* ss, socklen_t* l) { return lookup(h, p, ss, l); },
      &warnings, std::move(extras));
  route_errors_.clear();
  stream_errors_.clear();
  for (const auto& w : warnings) {
    PX_WARN("%s", w.str().c_str());
    if (!w.error) continue;
    add_error(&(w.stream ? stream_errors_ : route_errors_), w.name, w.text);
  }
  status_dirty_ = true;  // the errors may change without the generation (a name that resolves now)
  for (const auto& r : snap->routes()) {
    r->metrics_slot = route_slots_.slot(r->spec.name);
    for (const auto& p : r->pool.peers) p.metrics_slot = peer_slots_.slot(p.key);
  }
  for (const auto& st : snap->streams()) {
    st->metrics_slot = stream_slots_.slot(st->spec.name);
    auto& live = l4_live_[st->spec.name];
    if (!live) live = std::make_shared<std::atomic<int64_t>>(0);
    st->live = live;
    for (const auto& p : st->pool.peers) p.metrics_slot = peer_slots_.slot(p.key);
  }
  std::vector<L4Change> l4 = sync_l4_listeners(*snap);
  snapshot_ = snap;
  snapshot_time_ms_ = uv_hrtime() / 1000000u;
  built_gen_ = gen;
  for (size_t i = 0; i < workers_.size(); i++) workers_[i]->post_snapshot(snap, std::move(l4[i]));
  PX_INFO("generation %llu: %zu routes (built in %.1f ms)", static_cast<unsigned long long>(gen), snap->routes().size(),
          static_cast<double>(uv_hrtime() - t0) / 1e6);
}

// Stream listening sockets follow the store: the ones a snapshot's streams need are opened here (one
// per worker, SO_REUSEPORT, so that a port is shared the way pxd.conf's are), a copy of each is kept
// for an upgrade, and the ones no stream needs any more are closed. A socket that cannot be opened is
// logged and tried again at the next build; the stream serves nothing meanwhile.
std::vector<L4Change> Server::sync_l4_listeners(const route::Snapshot& snap) {
  std::vector<L4Change> ch(workers_.size());
  std::set<std::string> want;
  for (const auto& st : snap.streams())
    if (!st->passthrough) want.insert(st->key);
  for (auto it = l4_keys_.begin(); it != l4_keys_.end();) {
    if (want.count(*it)) {
      ++it;
      continue;
    }
    for (auto& c : ch) c.remove.push_back(*it);
    std::erase_if(handover_, [&](const auto& h) { return h.first == *it && (close(h.second), true); });
    PX_INFO("%s: closed", it->c_str());
    it = l4_keys_.erase(it);
  }
  for (const auto& st : snap.streams()) {
    if (st->passthrough || l4_keys_.count(st->key)) continue;  // passthrough routes have no socket of their own
    bool udp = st->spec.listen.udp;
    std::vector<int> fds;
    for (auto& [k, fd] : inherited_l4_)
      if (fd >= 0 && k == st->key) {
        fds.push_back(fd);
        fd = -1;
      }
    bool inherited = !fds.empty();
    if (!inherited) {
      ListenAddr la;
      la.host = st->spec.listen.host;
      la.port = st->spec.listen.port;
      std::string err;
      for (size_t i = 0; i < workers_.size(); i++) {
        int fd = make_listener(la, la.port, &err, udp, /*client_first=*/false);
        if (fd < 0) break;
        fds.push_back(fd);
      }
      if (fds.size() < workers_.size()) {
        for (int fd : fds) close(fd);
        PX_ERR("stream %s: %s", st->spec.name.c_str(), err.c_str());
        add_error(&stream_errors_, st->spec.name, err);  // pxadmind shows it with the stream
        continue;
      }
    }
    for (size_t i = 0; i < std::max(fds.size(), workers_.size()); i++) {
      int fd = i < fds.size() ? fds[i] : dup(fds[i % fds.size()]);
      ch[i % workers_.size()].add.push_back({st->key, fd, false, udp});
      handover_.emplace_back(st->key, fcntl(fd, F_DUPFD_CLOEXEC, 3));
    }
    l4_keys_.insert(st->key);
    // Tests and scripts wait for this line.
    PX_INFO("stream %s: listening on %s%s", st->spec.name.c_str(), st->key.c_str(), inherited ? " (inherited)" : "");
  }
  for (auto& [k, fd] : inherited_l4_)
    if (fd >= 0) {
      PX_WARN("an inherited socket for %s matches no stream: closed", k.c_str());
      close(fd);
    }
  inherited_l4_.clear();
  return ch;
}

// One stored certificate into the table being built: parsed only when its bytes changed.
void Server::add_cert(std::string_view key, std::string_view value, tls::CertTable* table) {
  std::string k(key);
  auto it = certs_.find(k);
  if (it == certs_.end() || it->second.raw != value) {
    auto c = std::make_shared<tls::Cert>();
    std::string err;
    std::string_view name = key.substr(store::keys::kCert.size());
    ParsedCert pc{std::string(value), nullptr, parse_epoch_};
    if (tls::cert_from_record(name, value, c.get(), &err))
      pc.cert = std::move(c);
    else
      PX_ERR("store: skipping invalid %.*s: %s", static_cast<int>(key.size()), key.data(), err.c_str());
    it = certs_.insert_or_assign(k, std::move(pc)).first;
  }
  it->second.epoch = parse_epoch_;
  if (it->second.cert) table->add(it->second.cert);
}

void Server::poll_store() {
  if (draining_) return;
  std::string err;
  if (!store_.is_open()) {
    if (!store_.open(cfg_.data_dir, true, &err)) {
      if (!store_missing_logged_) PX_WARN("%s; waiting for it (no routes until then)", err.c_str());
      store_missing_logged_ = true;
      if (!snapshot_) {
        snapshot_ =
            route::Snapshot::build(0, std::vector<std::shared_ptr<const route::RouteSpec>>{}, cfg_, nullptr, nullptr);
        built_gen_ = 0;
        for (auto& w : workers_) w->post_snapshot(snapshot_);
      }
      publish_status();
      return;
    }
    PX_INFO("store %s opened", cfg_.data_dir.c_str());
    if (!watch_started_) {
      uv_fs_event_init(&loop_, &store_watch_);
      store_watch_.data = this;
      std::string file = cfg_.data_dir + "/data.mdb";
      // inotify fires on the transaction's first page write, before its commit,
      // and may merge the commit's own event into that one: look again shortly after.
      if (uv_fs_event_start(
              &store_watch_,
              [](uv_fs_event_t* h, const char*, int, int) {
                auto* s = static_cast<Server*>(h->data);
                s->poll_store();
                // The commit (its fsync, then the meta page) may come well after the first page write.
                s->recheck_left_ = 10;
                uv_timer_start(
                    &s->recheck_timer_,
                    [](uv_timer_t* t) {
                      auto* srv = static_cast<Server*>(t->data);
                      srv->poll_store();
                      if (--srv->recheck_left_ <= 0) uv_timer_stop(t);
                    },
                    2, 2);
              },
              file.c_str(), 0) == 0)
        watch_started_ = true;
      else
        uv_close(reinterpret_cast<uv_handle_t*>(&store_watch_), nullptr);
    }
  }
  uint64_t gen;
  if (!store_.generation(&gen, &err)) {
    PX_ERR("%s", err.c_str());
    return;
  }
  if (gen != built_gen_ && dns_pending_ == 0) rebuild();
  publish_status();
}

void Server::refresh_dns() {
  // Forget answers so the next build asks again; rebuild only if some name is in use.
  if (dns_.empty() || dns_pending_) return;
  dns_.clear();
  built_gen_ = UINT64_MAX;
  poll_store();
}

void Server::watch_filters() {
  std::vector<std::string> dirs = {lua::builtin_filters_dir()};
  if (!cfg_.filters_dir.empty()) dirs.push_back(cfg_.filters_dir);
  uv_timer_init(&loop_, &filter_timer_);
  filter_timer_.data = this;
  for (const auto& d : dirs) {
    auto* ev = new uv_fs_event_t;
    uv_fs_event_init(&loop_, ev);
    ev->data = this;
    int r = uv_fs_event_start(
        ev,
        [](uv_fs_event_t* h, const char*, int, int) {
          auto* s = static_cast<Server*>(h->data);
          // Editors write in steps (truncate, write, rename): settle for 50 ms, then look.
          uv_timer_start(
              &s->filter_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->reload_filters(); }, 50, 0);
        },
        d.c_str(), 0);
    if (r != 0) {
      PX_WARN("filters: cannot watch %s: %s (edits need a restart)", d.c_str(), uv_strerror(r));
      uv_close(reinterpret_cast<uv_handle_t*>(ev), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
      continue;
    }
    filter_watches_.push_back(ev);
  }
  for (const auto& [path, src] : lua::read_filter_files(cfg_)) {
    filter_sources_[path] = src;
    filter_errors_[path] = lua::check_filter(path, src, lua::lua_dir());
  }
}

void Server::reload_filters() {
  std::vector<std::pair<std::string, std::string>> changed;
  for (auto& [path, src] : lua::read_filter_files(cfg_)) {
    auto it = filter_sources_.find(path);
    if (it != filter_sources_.end() && it->second == src) continue;
    std::string err = lua::check_filter(path, src, lua::lua_dir());
    filter_errors_[path] = err;
    if (err.empty())
      PX_INFO("filters: %s changed, reloading it in every worker", path.c_str());
    else
      PX_ERR("filters: %s: %s (the previous version keeps serving)", path.c_str(), err.c_str());
    filter_sources_[path] = src;
    changed.emplace_back(path, std::move(src));
  }
  status_dirty_ = true;
  if (changed.empty()) {
    publish_status();
    return;
  }
  for (auto& w : workers_) w->post_filters(changed);
  publish_status();
}

void Server::publish_status() {
  uint64_t now_applied = UINT64_MAX;
  for (auto& w : workers_) now_applied = std::min(now_applied, w->applied_generation());
  if (snapshot_ && now_applied != notified_gen_) {
    notified_gen_ = now_applied;
    notify::send("STATUS=" + status_line());
  }
  if (cfg_.status_file.empty() || !snapshot_) return;
  uint64_t applied = UINT64_MAX, ferrors = 0;
  for (auto& w : workers_) {
    applied = std::min(applied, w->applied_generation());
    ferrors += w->filter_errors();
  }
  if (applied == published_gen_ && !status_dirty_ && ferrors == published_errors_) return;
  published_errors_ = ferrors;
  published_gen_ = applied;
  status_dirty_ = false;
  nlohmann::json filters = nlohmann::json::array();
  for (const auto& [path, err] : filter_errors_) {
    nlohmann::json f = {{"name", lua::filter_name(path)}, {"path", path}, {"ok", err.empty()}};
    if (!err.empty()) f["error"] = err;
    filters.push_back(f);
  }
  std::string tmp = cfg_.status_file + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    nlohmann::json st = {{"pid", getpid()},       {"workers", workers_.size()},
                         {"generation", applied}, {"store_generation", built_gen_},
                         {"filters", filters},    {"filter_errors", ferrors}};
    // What pxadmind checks a stream's listen address against: pxd.conf's listeners, and whether this
    // pxd may bind ports below the kernel's unprivileged start.
    nlohmann::json listen = nlohmann::json::array();
    for (const auto& la : cfg_.listen)
      if (la.port) listen.push_back(la.str());
    st["listen"] = listen;
    st["low_port_limit"] = low_port_limit();
    st["route_errors"] = route_errors_;
    st["stream_errors"] = stream_errors_;
    if (metrics_) {  // where pxadmind reads live traffic for the dashboard (GET /v1/traffic)
      ListenAddr la;
      std::string e;
      if (parse_listen_addr(cfg_.metrics_listen, &la, &e)) {
        la.port = static_cast<uint16_t>(metrics_->port());
        st["metrics"] = la.str();
      }
    }
    st["can_bind_low_ports"] = can_bind_low_ports();
    f << st.dump() << "\n";
  }
  if (rename(tmp.c_str(), cfg_.status_file.c_str()) != 0)
    PX_WARN("status_file %s: %s", cfg_.status_file.c_str(), strerror(errno));
}

int Server::low_port_limit() {
  std::ifstream f("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int v = 1024;
  if (!(f >> v)) v = 1024;
  return v;
}

bool Server::can_bind_low_ports() {
  if (geteuid() == 0) return true;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("CapEff:", 0) == 0) {
      uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
      return caps & (uint64_t(1) << 10);  // CAP_NET_BIND_SERVICE
    }
  return false;
}

std::string Server::status_line() const {
  uint64_t applied = UINT64_MAX;
  for (const auto& w : workers_) applied = std::min(applied, w->applied_generation());
  if (draining_) return "draining";
  return "serving generation " + std::to_string(applied == UINT64_MAX ? 0 : applied) + ", " +
         std::to_string(workers_.size()) + " workers";
}

// Pings only while every worker's loop has turned within the interval: a stuck worker stops the
// pings, and the service manager restarts pxd.
void Server::watchdog() {
  uint64_t now = uv_hrtime() / 1000000u;
  for (const auto& w : workers_) {
    uint64_t hb = w->heartbeat_ms.load(std::memory_order_relaxed);
    if (hb && now - hb > watchdog_ms_) {
      PX_ERR("worker %d has not turned its loop for %llu ms: no watchdog ping", w->id(),
             static_cast<unsigned long long>(now - hb));
      return;
    }
  }
  notify::send("WATCHDOG=1");
}

void Server::on_signal(int signum) {
  // Draining for the pxd that replaces this one is no stop of the service: that one told it MAINPID.
  if (!successor_) notify::send("STOPPING=1");
  if (signum == SIGINT) {
    PX_INFO("SIGINT: stopping now");
    draining_ = true;
    for (auto& w : workers_) w->post_stop();
    return;
  }
  if (signum == SIGTERM) {
    if (draining_) return;
    draining_ = true;
    if (metrics_) metrics_->close();  // scrapes go to a successor, if there is one
    PX_INFO("SIGTERM: draining (grace period %llums)", static_cast<unsigned long long>(cfg_.grace_period_ms));
    for (auto& w : workers_) w->post_drain();
    uv_timer_start(
        &grace_timer_,
        [](uv_timer_t* t) {
          auto* s = static_cast<Server*>(t->data);
          PX_WARN("grace period over: closing the remaining connections");
          for (auto& w : s->workers_) w->post_stop();
        },
        cfg_.grace_period_ms, 0);
  }
}

void Server::reload() {
  if (draining_) return;
  Config next;
  std::string err;
  if (!load_config_file(cfg_.source, &next, &err)) {
    PX_ERR("reload refused: %s; the running configuration stays", err.c_str());
    return;
  }
  // What only a restart can change: kept, and said.
  auto keep = [&](const char* name, auto Config::*field) {
    if (next.*field != cfg_.*field) {
      PX_WARN("reload: %s changes at the next restart", name);
      next.*field = cfg_.*field;
    }
  };
  keep("workers", &Config::workers);
  keep("data_dir", &Config::data_dir);
  keep("status_file", &Config::status_file);
  keep("filters_dir", &Config::filters_dir);
  keep("geoip_database", &Config::geoip_database);
  keep("geoip_asn_database", &Config::geoip_asn_database);
  keep("global_filters", &Config::global_filters);
  keep("lua_memory_limit", &Config::lua_memory_limit);
  keep("shared_slots", &Config::shared_slots);
  keep("cache_dir", &Config::cache_dir);
  keep("cache_max_size", &Config::cache_max_size);
  keep("cache_max_object", &Config::cache_max_object);
  keep("cache_memory", &Config::cache_memory);
  keep("cache_index_slots", &Config::cache_index_slots);
  keep("io_engine", &Config::io_engine);
  next.use_uring = cfg_.use_uring;
  keep("store_poll_ms", &Config::store_poll_ms);
  keep("access_log", &Config::access_log);
  keep("access_log format", &Config::access_log_combined);
  keep("access_log_fields", &Config::access_log_fields);
  keep("metrics_listen", &Config::metrics_listen);
  // TLS: a new context when its settings change (or the first TLS listener comes).
  bssl::UniquePtr<SSL_CTX> new_ctx;
  bool tls_changed = next.tls_min_version != cfg_.tls_min_version || next.tls_max_version != cfg_.tls_max_version ||
                     next.tls_ciphers != cfg_.tls_ciphers || next.tls_curves != cfg_.tls_curves;
  if (!tls_ctx_ || tls_changed) {  // always there: TLS streams come and go with the store
    tls::ServerOptions o;
    o.min_version = next.tls_min_version;
    o.max_version = next.tls_max_version;
    if (!next.tls_ciphers.empty()) o.ciphers = next.tls_ciphers;
    if (!next.tls_curves.empty()) o.curves = next.tls_curves;
    new_ctx = tls::make_server_ctx(o, &err);
    if (!new_ctx) {
      PX_ERR("reload refused: %s: %s; the running configuration stays", next.source.c_str(), err.c_str());
      return;
    }
  }
  // Listeners: open the new ones (every worker's) before anything changes; close the gone ones.
  std::vector<std::string> old_keys, new_keys;
  for (const auto& la : cfg_.listen) old_keys.push_back(listen_key(la));
  for (const auto& la : next.listen) new_keys.push_back(listen_key(la));
  std::vector<Worker::Reconfig> rc(workers_.size());
  std::vector<std::string> opened;
  auto undo = [&] {
    for (auto& r : rc)
      for (auto& a : r.add) ::close(a.fd);
  };
  for (const auto& la : next.listen) {
    std::string key = listen_key(la);
    if (std::find(old_keys.begin(), old_keys.end(), key) != old_keys.end()) continue;
    uint16_t port = la.port;
    for (size_t w = 0; w < workers_.size(); w++) {
      int fd = make_listener(la, port, &err);
      if (fd < 0) {
        undo();
        PX_ERR("reload refused: %s: %s; the running configuration stays", next.source.c_str(), err.c_str());
        return;
      }
      if (port == 0) port = bound_port(fd);
      rc[w].add.push_back({key, fd, la.tls, false, la.proxy, la.h2c, !la.http1_only});
    }
    ListenAddr actual = la;
    actual.port = port;
    opened.push_back(actual.str() + (la.tls ? " (tls)" : ""));
  }
  std::vector<std::string> removed;
  for (const auto& k : old_keys)
    if (std::find(new_keys.begin(), new_keys.end(), k) == new_keys.end()) removed.push_back(k);
  for (auto& r : rc)
    for (auto& l : r.add) handover_.emplace_back(l.key, fcntl(l.fd, F_DUPFD_CLOEXEC, 3));
  for (auto it = handover_.begin(); it != handover_.end();) {
    if (std::find(removed.begin(), removed.end(), it->first) != removed.end()) {
      close(it->second);
      it = handover_.erase(it);
    } else {
      ++it;
    }
  }
  if (new_ctx) {
    if (tls_ctx_) old_tls_ctxs_.push_back(std::move(tls_ctx_));
    tls_ctx_ = std::move(new_ctx);
  }
  log::Level lvl;
  if (log::parse_level(next.log_level.c_str(), &lvl)) log::set_level(lvl);
  for (size_t w = 0; w < workers_.size(); w++) {
    rc[w].cfg = next;
    rc[w].remove = removed;
    rc[w].tls_ctx = tls_ctx_.get();
    workers_[w]->post_config(std::move(rc[w]));
  }
  bool routing_changed = !route::Snapshot::same_build_settings(next, cfg_);
  cfg_ = std::move(next);
  for (const auto& o : opened) PX_INFO("listening on %s", o.c_str());
  for (const auto& k : removed) PX_INFO("no longer listening on %s", k.c_str());
  PX_INFO("reloaded %s: %zu listeners opened, %zu closed; new connections get the new settings", cfg_.source.c_str(),
          opened.size(), removed.size());
  if (routing_changed) {
    built_gen_ = UINT64_MAX;  // the routes' limits and defaults are part of the routing build
    poll_store();
  }
}

std::string Server::metrics_text() {
  std::vector<Worker*> ws;
  std::vector<WorkerMetrics*> ms;
  for (auto& w : workers_) {
    ws.push_back(w.get());
    ms.push_back(w->metrics());
  }
  ScrapeInputs in;
  in.workers = &ws;
  in.metrics = &ms;
  in.slots = &route_slots_;
  in.peer_slots = &peer_slots_;
  in.stream_slots = &stream_slots_;
  uint64_t applied = UINT64_MAX;
  for (auto& w : workers_) applied = std::min(applied, w->applied_generation());
  in.generation = applied == UINT64_MAX ? 0 : applied;
  in.generation_age_s = static_cast<double>(uv_hrtime() / 1000000u - snapshot_time_ms_) / 1000.0;
  in.access_log_dropped = access_log_ ? access_log_->dropped() : 0;
  if (snapshot_ && snapshot_->certs())
    for (const auto& c : snapshot_->certs()->all()) in.cert_not_after.emplace_back(c->name, c->not_after);
  in.cache = cache_totals();
  return scrape(in);
}

CacheTotals Server::cache_totals() {
  CacheTotals t;
  if (!cache_) return t;
  t.on = true;
  const cache::Stats& s = cache_->stats;
  t.objects = cache_->objects();
  t.bytes = cache_->bytes();
  t.max_bytes = cache_->max_size();
  t.stores = s.stores.load(std::memory_order_relaxed);
  t.stored_bytes = s.store_bytes.load(std::memory_order_relaxed);
  t.evictions = s.evictions.load(std::memory_order_relaxed);
  t.coalesced = s.coalesced.load(std::memory_order_relaxed);
  t.errors = s.errors.load(std::memory_order_relaxed);
  t.sendfile_bytes = s.sendfile_bytes.load(std::memory_order_relaxed);
  const auto& names = route_slots_.names();
  for (size_t slot = 0; slot <= names.size(); slot++) {
    std::array<uint64_t, 7> v{};
    size_t at = slot < names.size() ? slot : kSlotOther;
    for (auto& w : workers_)
      if (CacheStage* c = w->cache()) {
        for (int i = 0; i < kCacheResults; i++) v[i] += c->counts[at].results[i].get();
        v[6] += c->counts[at].served_bytes.get();
      }
    bool any = false;
    for (uint64_t x : v) any = any || x;
    if (any) t.routes.emplace_back(slot < names.size() ? names[slot] : "other", v);
  }
  return t;
}

// status_file.cache: what pxctl cache stats shows (pxadmind reads it), once a second when it changed.
void Server::write_cache_stats() {
  if (!cache_ || cfg_.status_file.empty()) return;
  uint64_t now = uv_now(&loop_);
  if (now - cache_stats_ms_ < 1000) return;
  cache_stats_ms_ = now;
  CacheTotals t = cache_totals();
  nlohmann::json routes = nlohmann::json::object();
  for (const auto& [name, v] : t.routes) {
    nlohmann::json r;
    for (int i = 0; i < kCacheResults; i++) r[kCacheResultNames[i]] = v[i];
    r["served_bytes"] = v[6];
    r["bytes"] = cache_->route_bytes(cache_->tag(name));  // what the route's stored responses take
    routes[name] = r;
  }
  nlohmann::json j = {{"dir", cache_->dir()},     {"max_bytes", t.max_bytes}, {"bytes", t.bytes},
                      {"objects", t.objects},     {"stored", t.stores},       {"stored_bytes", t.stored_bytes},
                      {"evictions", t.evictions}, {"coalesced", t.coalesced}, {"errors", t.errors},
                      {"routes", routes}};
  std::string text = j.dump();
  if (text == cache_stats_text_) return;
  cache_stats_text_ = text;
  std::string path = cfg_.status_file + ".cache", tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text << "\n";
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) PX_WARN("%s: %s", path.c_str(), strerror(errno));
}

// /metrics on its own listener, served by the main thread (never by a worker).
bool Server::start_metrics(std::string* error) {
  ListenAddr la;
  if (!parse_listen_addr(cfg_.metrics_listen, &la, error)) return false;
  int fd = make_listener(la, la.port, error);
  if (fd < 0) return false;
  metrics_ = std::make_unique<http::Server>(&loop_, http::metrics_handler([this] { return metrics_text(); }),
                                            http::Server::Options{});
  if (int r = metrics_->listen_fd(fd)) {
    *error = uv_strerror(r);
    return false;
  }
  ListenAddr actual = la;
  actual.port = static_cast<uint16_t>(metrics_->port());
  PX_INFO("metrics on http://%s/metrics", actual.str().c_str());
  return true;
}

void Server::upgrade() {
  if (draining_ || successor_) {
    PX_WARN("upgrade: refused (%s)", successor_ ? "one is under way" : "this pxd is draining");
    return;
  }
  if (exe_.empty()) {
    PX_ERR("upgrade: the program's path is unknown");
    return;
  }
  std::vector<std::string> env;
  for (char** e = environ; *e; e++) {
    std::string_view v(*e);
    if (v.rfind("PX_INHERIT_FDS=", 0) == 0 || v.rfind("PX_LISTEN_KEYS=", 0) == 0 || v.rfind("LISTEN_", 0) == 0 ||
        v.rfind("PX_UPGRADE_PARENT=", 0) == 0)
      continue;
    env.emplace_back(v);
  }
  std::string keys;
  for (const auto& h : handover_) keys += h.first + "\n";
  env.push_back("PX_INHERIT_FDS=" + std::to_string(handover_.size()));
  env.push_back("PX_LISTEN_KEYS=" + keys);
  env.push_back("PX_UPGRADE_PARENT=" + std::to_string(getpid()));
  std::vector<char*> envp, args;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<uv_stdio_container_t> stdio(3 + handover_.size());
  for (size_t i = 0; i < stdio.size(); i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i < 3 ? static_cast<int>(i) : handover_[i - 3].second;
  }
  uv_process_options_t opt{};
  opt.file = exe_.c_str();
  opt.args = args.data();
  opt.env = envp.data();
  opt.stdio = stdio.data();
  opt.stdio_count = static_cast<int>(stdio.size());
  opt.exit_cb = [](uv_process_t* p, int64_t status, int sig) {
    auto* s = static_cast<Server*>(p->data);
    if (!s->draining_)
      PX_ERR("upgrade failed: the new pxd ended (status %lld, signal %d) before it served; this one keeps serving",
             static_cast<long long>(status), sig);
    s->successor_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
  };
  successor_ = new uv_process_t{};
  successor_->data = this;
  int r = uv_spawn(&loop_, successor_, &opt);
  if (r != 0) {
    PX_ERR("upgrade: cannot start %s: %s; this pxd keeps serving", exe_.c_str(), uv_strerror(r));
    uv_close(reinterpret_cast<uv_handle_t*>(successor_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    successor_ = nullptr;
    return;
  }
  PX_INFO("upgrade: started %s (pid %d) with %zu listening sockets; this pxd drains once it serves", exe_.c_str(),
          successor_->pid, handover_.size());
}

void Server::on_worker_exit() {
  if (exited_.load() < static_cast<int>(workers_.size())) return;
  uv_stop(&loop_);
}

int Server::run() {
  int n = cfg_.workers > 0 ? cfg_.workers : static_cast<int>(std::thread::hardware_concurrency());
  if (n < 1) n = 1;
  {  // TLS listeners, and TLS streams that the store may bring later
    tls::ServerOptions o;
    o.min_version = cfg_.tls_min_version;
    o.max_version = cfg_.tls_max_version;
    if (!cfg_.tls_ciphers.empty()) o.ciphers = cfg_.tls_ciphers;
    if (!cfg_.tls_curves.empty()) o.curves = cfg_.tls_curves;
    std::string terr;
    tls_ctx_ = tls::make_server_ctx(o, &terr);
    if (!tls_ctx_) {
      PX_ERR("%s: %s", cfg_.source.c_str(), terr.c_str());
      return 1;
    }
  }
  shared_ = std::make_unique<SharedTable>(cfg_.shared_slots);
  if (cfg_.cache_dir != "off") {
    std::string dir = cfg_.cache_dir.empty() ? cfg_.data_dir + "/cache" : cfg_.cache_dir, why;
    cache_ = std::make_unique<cache::Store>(dir, cfg_.cache_max_size, cfg_.cache_index_slots);
    if (!cache_->open(&why)) {  // routes with a cache are then proxied uncached
      PX_ERR("%s: %s: no response cache", cfg_.source.c_str(), why.c_str());
      cache_.reset();
    }
  }
  if (cfg_.io_engine != "epoll") {  // io_uring, when this kernel (its sysctls, seccomp, a container) runs it
    std::string why = net::UringSet::probe();
    if (why.empty()) {
      cfg_.use_uring = true;
      PX_INFO("io engine: io_uring (io_engine %s)", cfg_.io_engine.c_str());
    } else if (cfg_.io_engine == "uring") {
      PX_ERR("%s: io_engine uring: %s", cfg_.source.c_str(), why.c_str());
      return 1;
    } else {
      PX_INFO("io engine: epoll (io_engine auto: %s)", why.c_str());
    }
  } else {
    PX_INFO("io engine: epoll (io_engine epoll)");
  }
  for (int i = 0; i < n; i++) {
    workers_.push_back(std::make_unique<Worker>(i, cfg_));
    workers_.back()->set_tls(tls_ctx_.get());
    workers_.back()->set_shared(shared_.get());
    if (cache_) workers_.back()->set_cache(cache_.get(), cfg_.cache_memory, cfg_.cache_max_object);
  }
  if (!cfg_.access_log.empty()) {
    access_log_ = std::make_unique<AccessLog>();
    std::string aerr;
    if (!access_log_->open(cfg_.access_log,
                           cfg_.access_log_combined ? AccessLogFormat::combined : AccessLogFormat::json, &aerr)) {
      PX_ERR("%s: %s", cfg_.source.c_str(), aerr.c_str());
      return 1;
    }
    access_log_->set_fields(cfg_.access_log_fields);
    for (auto& w : workers_)
      w->set_access_log(std::make_unique<AccessLogObserver>(access_log_.get(), access_log_->add_slot()));
    access_log_->start();
  }
  if (!cfg_.metrics_listen.empty())
    for (auto& w : workers_) w->set_metrics(std::make_unique<WorkerMetrics>());
  if (!cfg_.status_file.empty()) {
    // pxctl route set --record: recorded requests, one file per route.
    std::string records = cfg_.status_file + ".records";
    if (mkdir(records.c_str(), 0700) == 0 || errno == EEXIST)
      for (auto& w : workers_) w->set_records(records);
    else
      PX_WARN("pxctl route set --record is off: %s: %s", records.c_str(), strerror(errno));
    // pxctl trace: a key for pxadmind's tokens, and where traced requests' records go.
    std::string dir = cfg_.status_file + ".traces", err;
    TraceKey key;
    if ((::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) &&
        trace_key_file(cfg_.status_file + ".trace-key", true, &key, &err)) {
      for (auto& w : workers_) w->set_trace(key, dir);
    } else {
      PX_WARN("pxctl trace is off: %s", err.empty() ? (dir + ": " + strerror(errno)).c_str() : err.c_str());
    }
  }
  std::vector<std::vector<ListenFd>> fds;
  std::string err;
  if (!open_listeners(&fds, &err)) {
    PX_ERR("%s", err.c_str());
    return 1;
  }
  uv_loop_init(&loop_);
  loop_.data = this;
  uv_async_init(&loop_, &exit_async_, [](uv_async_t* a) { static_cast<Server*>(a->data)->on_worker_exit(); });
  exit_async_.data = this;
  uv_async_init(&loop_, &applied_async_, [](uv_async_t* a) { static_cast<Server*>(a->data)->publish_status(); });
  applied_async_.data = this;
  for (auto& w : workers_) {
    w->on_exit = [this] {
      exited_.fetch_add(1);
      uv_async_send(&exit_async_);
    };
    w->on_applied = [this] { uv_async_send(&applied_async_); };
  }
  uv_signal_init(&loop_, &sigterm_);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sighup_);
  sigterm_.data = sigint_.data = sighup_.data = this;
  auto sig = [](uv_signal_t* s, int signum) { static_cast<Server*>(s->data)->on_signal(signum); };
  uv_signal_start(&sigterm_, sig, SIGTERM);
  uv_signal_start(&sigint_, sig, SIGINT);
  uv_signal_start(
      &sighup_,
      [](uv_signal_t* h, int) {
        auto* s = static_cast<Server*>(h->data);
        notify::reloading();
        s->reload();
        notify::send("READY=1\nSTATUS=" + s->status_line());
      },
      SIGHUP);
  uv_timer_init(&loop_, &poll_timer_);
  uv_timer_init(&loop_, &grace_timer_);
  uv_timer_init(&loop_, &dns_timer_);
  uv_timer_init(&loop_, &recheck_timer_);
  poll_timer_.data = grace_timer_.data = dns_timer_.data = recheck_timer_.data = this;

  if (!cfg_.metrics_listen.empty() && !start_metrics(&err)) {
    PX_ERR("%s: metrics_listen %s: %s", cfg_.source.c_str(), cfg_.metrics_listen.c_str(), err.c_str());
    for (auto& w : workers_) w->post_stop();
    return 1;
  }
  watch_filters();
  poll_store();  // the first snapshot, before any worker accepts
  for (size_t i = 0; i < workers_.size(); i++) workers_[i]->start(std::move(fds[i]));
  uv_timer_start(
      &poll_timer_,
      [](uv_timer_t* t) {
        auto* s = static_cast<Server*>(t->data);
        s->poll_store();
        s->write_cache_stats();
      },
      cfg_.store_poll_ms, cfg_.store_poll_ms);
  uv_timer_start(
      &dns_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->refresh_dns(); }, 30000, 30000);
  PX_INFO("pxd ready: %d workers", n);
  notify::send("READY=1\nMAINPID=" + std::to_string(getpid()) + "\nSTATUS=" + status_line());
  if (const char* p = getenv("PX_UPGRADE_PARENT")) {
    // This pxd replaces its parent: now that it serves, the parent drains.
    pid_t parent = static_cast<pid_t>(atol(p));
    unsetenv("PX_UPGRADE_PARENT");
    if (parent > 1 && parent == getppid()) {
      kill(parent, SIGTERM);
      PX_INFO("upgrade: serving; pxd %d drains", static_cast<int>(parent));
    }
  }
  uv_signal_init(&loop_, &sigusr1_);
  sigusr1_.data = this;
  uv_signal_start(
      &sigusr1_,
      [](uv_signal_t* h, int) {
        auto* s = static_cast<Server*>(h->data);
        if (s->access_log_) {
          s->access_log_->reopen();
          PX_INFO("SIGUSR1: reopening the access log");
        }
      },
      SIGUSR1);
  uv_signal_init(&loop_, &sigusr2_);
  sigusr2_.data = this;
  uv_signal_start(
      &sigusr2_, [](uv_signal_t* h, int) { static_cast<Server*>(h->data)->upgrade(); }, SIGUSR2);
  uv_timer_init(&loop_, &watchdog_timer_);
  watchdog_timer_.data = this;
  if (uint64_t us = notify::watchdog_usec()) {
    watchdog_ms_ = us / 1000;
    uint64_t every = std::max<uint64_t>(watchdog_ms_ / 2, 1);
    uv_timer_start(
        &watchdog_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->watchdog(); }, every, every);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  if (access_log_) {
    access_log_->stop();
    if (uint64_t d = access_log_->dropped())
      PX_WARN("access log: %llu lines dropped (the disk fell behind)", static_cast<unsigned long long>(d));
  }
  for (auto* ev : filter_watches_)
    uv_close(reinterpret_cast<uv_handle_t*>(ev), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  filter_watches_.clear();
  if (metrics_) metrics_->close();
  if (successor_) {  // the pxd that replaces this one runs on; only our handle on it goes
    uv_close(reinterpret_cast<uv_handle_t*>(successor_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    successor_ = nullptr;
  }
  net::close_all_handles(&loop_);
  uv_loop_close(&loop_);
  for (auto& h : handover_) close(h.second);
  handover_.clear();
  PX_INFO("pxd stopped");
  return 0;
}

}  // namespace px::proxy
