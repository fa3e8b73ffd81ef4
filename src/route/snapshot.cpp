#include "route/snapshot.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/strings.h"

namespace px::route {

uint32_t hash_bytes(const void* data, size_t len, uint32_t seed) {
  // FNV-1a with a final avalanche (murmur3 fmix32).
  uint32_t h = seed;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

bool Snapshot::insert(Node& root, const Route* r, std::string* conflict) {
  Node* n = &root;
  for (const auto& s : path_segments(r->spec.path)) {
    auto& child = n->children[s];
    if (!child) child = std::make_unique<Node>();
    n = child.get();
  }
  if (n->route) {
    *conflict = n->route->spec.name;
    return false;
  }
  n->route = r;
  return true;
}

const Route* Snapshot::walk(const Node& root, std::string_view path) const {
  const Route* best = root.route;
  const Node* n = &root;
  size_t q = path.find_first_of("?#");
  if (q != std::string_view::npos) path = path.substr(0, q);
  while (!path.empty() && !n->children.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    size_t slash = path.find('/');
    std::string_view seg = path.substr(0, slash);
    // unordered_map<string> lookup by string_view needs a key; segments are short.
    thread_local std::string key;
    key.assign(seg);
    auto it = n->children.find(key);
    if (it == n->children.end()) break;
    n = it->second.get();
    if (n->route) best = n->route;
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return best;
}

namespace {
// ip_hash: 64 points per unit of weight on a ring, so a peer's removal moves only its own clients.
void build_ring(Pool* pool) {
  for (size_t i = 0; i < pool->peers.size(); i++) {
    const auto& peer = pool->peers[i];
    for (uint32_t v = 0; v < 64 * peer.weight; v++) {
      std::string k = peer.key + "#" + std::to_string(v);
      pool->ring.emplace_back(hash_bytes(k.data(), k.size()), static_cast<uint16_t>(i));
    }
  }
  std::sort(pool->ring.begin(), pool->ring.end());
}

// An L4 pool's peers (peer keys tcp://host:port or udp://host:port), resolved.
void add_l4_peers(L4Stream* l, const Resolver& resolve, BuildWarnings* warnings, bool route) {
  for (const auto& u : l->spec.upstreams) {
    PeerAddr pa;
    pa.key = u.url;
    pa.host = u.host;
    pa.port = u.port;
    pa.weight = u.weight;
    pa.resolved = resolve && resolve(u.host, u.port, &pa.addr, &pa.addr_len);
    if (!pa.resolved && warnings) warnings->push_back({!route, l->spec.name, "cannot resolve " + u.host});
    l->pool.peers.push_back(std::move(pa));
  }
  if (l->pool.lb == Balance::ip_hash) build_ring(&l->pool);
}
}  // namespace

std::string l4_listen_key(const StreamListen& l) {
  return std::string(l.udp ? "stream udp " : "stream tcp ") + l.str();
}

// Every setting of cfg that build() below reads, and only those.
bool Snapshot::same_build_settings(const Config& a, const Config& b) {
  return a.default_route == b.default_route && a.upstream_connect_timeout_ms == b.upstream_connect_timeout_ms &&
         a.upstream_read_timeout_ms == b.upstream_read_timeout_ms && a.max_body_size == b.max_body_size;
}

bool purge_matches(std::string_view pattern, std::string_view target) {
  // A glob of '*' (any run of characters): the last '*' seen is where a mismatch goes back to.
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < target.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == target[t]) {
      p++, t++;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') p++;
  return p == pattern.size();
}

bool parse_purges(std::string_view text, std::vector<CachePurge>* out) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("purges") || !j["purges"].is_array()) return false;
  out->clear();
  for (const auto& p : j["purges"]) {
    if (!p.is_object() || !p.contains("pattern") || !p["pattern"].is_string() || !p.contains("at") ||
        !p["at"].is_number_integer())
      return false;
    out->push_back({p["pattern"].get<std::string>(), p["at"].get<int64_t>()});
  }
  return true;
}

std::shared_ptr<const Snapshot> Snapshot::build(uint64_t generation, std::vector<RouteSpec> specs, const Config& cfg,
                                                const Resolver& resolve, BuildWarnings* warnings) {
  std::vector<std::shared_ptr<const RouteSpec>> shared;
  shared.reserve(specs.size());
  for (auto& sp : specs) shared.push_back(std::make_shared<const RouteSpec>(std::move(sp)));
  return build(generation, std::move(shared), cfg, resolve, warnings);
}

std::shared_ptr<const Snapshot> Snapshot::build(uint64_t generation,
                                                std::vector<std::shared_ptr<const RouteSpec>> specs, const Config& cfg,
                                                const Resolver& resolve, BuildWarnings* warnings,
                                                SnapshotExtras extras) {
  auto s = std::make_shared<Snapshot>();
  s->generation_ = generation;
  for (auto& a : extras.acls) s->acls_.emplace(a.name, std::move(a));
  for (auto& c : extras.challenges) s->challenges_.emplace(std::move(c.first), std::move(c.second));
  s->certs_ = std::move(extras.certs);
  if (!std::is_sorted(specs.begin(), specs.end(), [](const auto& a, const auto& b) { return a->name < b->name; }))
    std::sort(specs.begin(), specs.end(), [](const auto& a, const auto& b) { return a->name < b->name; });
  s->routes_.reserve(specs.size());
  s->exact_.reserve(specs.size());
  std::vector<std::shared_ptr<const RouteSpec>> passthrough;
  for (auto& sp : specs) {
    const RouteSpec& spec = *sp;
    if (spec.passthrough) {  // not an HTTP route: served below, as a stream without a listener
      if (spec.enabled) passthrough.push_back(std::move(sp));
      continue;
    }
    if (!spec.enabled && spec.name != cfg.default_route) continue;
    auto r = std::make_unique<Route>(std::move(sp));
    r->index = static_cast<uint32_t>(s->routes_.size());
    r->connect_timeout_ms = spec.connect_timeout_ms ? spec.connect_timeout_ms : cfg.upstream_connect_timeout_ms;
    r->read_timeout_ms = spec.read_timeout_ms ? spec.read_timeout_ms : cfg.upstream_read_timeout_ms;
    r->max_body_size = spec.max_body_size < 0 ? cfg.max_body_size : static_cast<uint64_t>(spec.max_body_size);
    std::string_view p = spec.path;
    while (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
    r->prefix_len = p == "/" ? 0 : p.size();
    if (spec.cache.enabled)
      if (auto it = extras.purges.find(spec.name); it != extras.purges.end()) r->purges = it->second;
    r->pool.lb = spec.lb;
    r->pool.health = spec.health;
    for (const auto& u : spec.upstreams) {
      PeerAddr pa;
      pa.tls = u.tls;
      if (u.tls) {
        // Routes that reach the same peer with other TLS settings get their own pools.
        pa.tls_spec = spec.upstream_tls;
        pa.key = u.url;
        const auto& t = spec.upstream_tls;
        if (!t.verify || !t.ca_file.empty() || !t.sni.empty())
          pa.key += " (" + std::string(t.verify ? "verify" : "verify off") +
                    (t.ca_file.empty() ? "" : " ca " + t.ca_file) + (t.sni.empty() ? "" : " sni " + t.sni) + ")";
        if (u.h2) pa.key += " h2";
      } else if (u.h2) {
        // h2c://, grpc:// and http:// with upstream_proto h2 speak the same protocol to it: one pool.
        pa.key = "h2c://" + u.url.substr(u.url.find("://") + 3);
      } else {
        pa.key = u.url.substr(7);
      }
      pa.h2 = u.h2;
      pa.grpc = u.grpc;
      pa.host = u.host;
      pa.port = u.port;
      pa.weight = u.weight;
      pa.resolved = resolve(u.host, u.port, &pa.addr, &pa.addr_len);
      if (!pa.resolved && warnings) warnings->push_back({false, spec.name, "cannot resolve " + u.host});
      if (u.tls && !spec.upstream_tls.verify && warnings)
        warnings->push_back(
            {false, spec.name,
             "TLS to " + u.url + " is not verified (upstream_tls.verify is off): anyone on the path can impersonate it",
             false});
      r->pool.peers.push_back(std::move(pa));
    }
    if (spec.lb == Balance::ip_hash) build_ring(&r->pool);
    const Route* rp = r.get();
    s->routes_.push_back(std::move(r));
    if (rp->spec.name == cfg.default_route) s->default_route_ = rp;
    if (!rp->spec.enabled) continue;
    for (const auto& h : rp->spec.hosts) {
      bool wild = h.size() > 2 && h[0] == '*' && h[1] == '.';
      Node& root = wild ? s->wildcard_[h.substr(2)] : s->exact_[h];
      std::string other;
      if (!s->insert(root, rp, &other) && warnings)
        warnings->push_back(
            {false, rp->spec.name,
             "host " + h + " path " + rp->spec.path + " is already served by route " + other + "; ignored"});
    }
  }
  // Streams: enabled ones, by name; a listen address taken by an earlier one is a conflict (pxadmind
  // refuses those, so only a hand-made store gets here).
  std::sort(extras.streams.begin(), extras.streams.end(),
            [](const auto& a, const auto& b) { return a->name < b->name; });
  for (auto& sp : extras.streams) {
    const StreamSpec& spec = *sp;
    if (!spec.enabled) continue;
    const L4Stream* clash = nullptr;
    for (const auto& o : s->streams_)
      if (o->spec.listen.overlaps(spec.listen)) clash = o.get();
    if (clash) {
      if (warnings)
        warnings->push_back(
            {true, spec.name, "listen " + spec.listen.str() + " is taken by stream " + clash->spec.name + "; ignored"});
      continue;
    }
    auto l = std::make_unique<L4Stream>(std::move(sp));
    l->index = static_cast<uint32_t>(s->streams_.size());
    l->key = l4_listen_key(spec.listen);
    l->connect_timeout_ms = spec.connect_timeout_ms ? spec.connect_timeout_ms : cfg.upstream_connect_timeout_ms;
    l->idle_timeout_ms = spec.idle_timeout_ms ? spec.idle_timeout_ms : spec.listen.udp ? 30000 : 600000;
    l->pool.lb = spec.lb == StreamBalance::least_conn ? Balance::least_conn
                 : spec.lb == StreamBalance::hash     ? Balance::ip_hash
                                                      : Balance::round_robin;
    l->pool.health = spec.health;
    add_l4_peers(l.get(), resolve, warnings, false);
    s->streams_.push_back(std::move(l));
  }
  // Passthrough routes: relayed like TCP streams, entered by SNI on pxd's TLS listeners.
  for (auto& rp : passthrough) {
    auto sp = std::make_shared<StreamSpec>();
    sp->name = rp->name;
    for (const auto& u : rp->upstreams) sp->upstreams.push_back(StreamUpstream{u.url, u.host, u.port, u.weight});
    sp->lb = rp->lb == Balance::least_conn ? StreamBalance::least_conn
             : rp->lb == Balance::ip_hash  ? StreamBalance::hash
                                           : StreamBalance::round_robin;
    sp->connect_timeout_ms = rp->connect_timeout_ms;
    sp->health = rp->health;
    sp->access_log = rp->access_log;
    sp->version = rp->version;
    auto l = std::make_unique<L4Stream>(std::move(sp));
    const StreamSpec& spec = l->spec;
    l->index = static_cast<uint32_t>(s->streams_.size());
    l->passthrough = true;
    l->connect_timeout_ms = spec.connect_timeout_ms ? spec.connect_timeout_ms : cfg.upstream_connect_timeout_ms;
    l->idle_timeout_ms = 600000;
    l->pool.lb = rp->lb;
    l->pool.health = spec.health;
    add_l4_peers(l.get(), resolve, warnings, true);
    for (const auto& h : rp->hosts) {
      bool wild = h.size() > 2 && h[0] == '*' && h[1] == '.';
      auto& m = wild ? s->pass_wild_ : s->pass_exact_;
      if (!m.emplace(wild ? h.substr(2) : h, l.get()).second && warnings)
        warnings->push_back({false, spec.name, "passthrough host " + h + " is taken by another route; ignored"});
    }
    s->streams_.push_back(std::move(l));
  }
  return s;
}

const L4Stream* Snapshot::passthrough(std::string_view sni) const {
  if (sni.empty()) return nullptr;
  thread_local std::string key;
  key.assign(sni);
  if (auto it = pass_exact_.find(key); it != pass_exact_.end()) return it->second;
  std::string_view rest = sni;
  while (!pass_wild_.empty()) {
    size_t dot = rest.find('.');
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
    key.assign(rest);
    if (auto it = pass_wild_.find(key); it != pass_wild_.end()) return it->second;
  }
  return nullptr;
}

const Route* Snapshot::match(std::string_view host, std::string_view path) const {
  // Strip a port (but not from a bare IPv6 literal) and a trailing dot; lower-case.
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    host = host.substr(0, close == std::string_view::npos ? host.size() : close + 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  char buf[256];
  if (host.size() >= sizeof buf) return default_route_;
  for (size_t i = 0; i < host.size(); i++) buf[i] = ascii_lower(host[i]);
  std::string_view h(buf, host.size());
  thread_local std::string key;
  if (!exact_.empty()) {
    key.assign(h);
    auto it = exact_.find(key);
    if (it != exact_.end()) {
      if (const Route* r = walk(it->second, path)) return r;
    }
  }
  if (!wildcard_.empty()) {
    // Longest wildcard first: for a.b.example.com try b.example.com, then example.com, then com.
    std::string_view rest = h;
    while (true) {
      size_t dot = rest.find('.');
      if (dot == std::string_view::npos) break;
      rest.remove_prefix(dot + 1);
      key.assign(rest);
      auto it = wildcard_.find(key);
      if (it != wildcard_.end()) {
        if (const Route* r = walk(it->second, path)) return r;
      }
    }
  }
  return default_route_;
}

std::string_view Snapshot::strip(const Route& r, std::string_view path, bool* need_slash) {
  *need_slash = false;
  if (!r.spec.strip_path || r.prefix_len == 0 || path.size() < r.prefix_len) return path;
  std::string_view rest = path.substr(r.prefix_len);
  if (rest.empty() || rest.front() != '/') *need_slash = true;
  return rest;
}

}  // namespace px::route
