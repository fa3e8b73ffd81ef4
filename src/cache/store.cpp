// The cache's files, its lock-free index and each worker's objects (store.h).
#include "cache/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <openssl/siphash.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/log.h"
#include "core/slot16.h"

namespace px::cache {

namespace {
constexpr uint64_t kIdBits = 40, kIdMask = (uint64_t(1) << kIdBits) - 1;
constexpr uint64_t kUnit = 4096;         // sizes in the index, rounded up
constexpr size_t kInline = 64 * 1024;    // bodies up to this are read into memory, larger mapped
constexpr size_t kMaxMaps = 4096;        // mapped objects per worker
constexpr uint64_t kSpill = 256 * 1024;  // a writer holds this much before it opens its file

using slot16::cas;
using slot16::load;
inline uint64_t pack(uint64_t id, uint64_t bytes) {
  uint64_t units = std::min<uint64_t>((bytes + kUnit - 1) / kUnit, (uint64_t(1) << (64 - kIdBits)) - 1);
  return (units << kIdBits) | id;
}
inline uint64_t id_of(uint64_t val) { return val & kIdMask; }
inline uint64_t bytes_of(uint64_t val) { return (val >> kIdBits) * kUnit; }

uint64_t steady_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

bool read_all(int fd, char* p, size_t n, off_t off) {
  while (n) {
    ssize_t r = pread(fd, p, n, off);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    p += r, n -= static_cast<size_t>(r), off += r;
  }
  return true;
}
bool write_all(int fd, const char* p, size_t n, off_t off) {
  while (n) {
    ssize_t r = pwrite(fd, p, n, off);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) errno = ENOSPC;
      return false;
    }
    p += r, n -= static_cast<size_t>(r), off += r;
  }
  return true;
}

// The header of a file of `size` bytes is px's and whole.
bool header_ok(const FileHeader& h, uint64_t size) {
  return memcmp(h.magic, kMagic, 8) == 0 && h.key_len > 0 && h.key_len < (1u << 20) && h.vary_len < (1u << 16) &&
         h.head_len < (1u << 24) &&
         sizeof(FileHeader) + uint64_t(h.key_len) + h.vary_len + h.head_len + h.body_len == size;
}

}  // namespace

void parse_head_lines(std::string_view lines, http::Head* head) {
  head->clear();
  head->buf.assign(lines.data(), lines.size());
  size_t pos = 0;
  while (pos < lines.size()) {
    size_t eol = lines.find("\r\n", pos);
    if (eol == std::string_view::npos) break;
    size_t colon = lines.find(": ", pos);
    if (colon == std::string_view::npos || colon > eol) break;
    http::HeaderRef ref;
    ref.name_off = static_cast<uint32_t>(pos);
    ref.name_len = static_cast<uint32_t>(colon - pos);
    ref.value_off = static_cast<uint32_t>(colon + 2);
    ref.value_len = static_cast<uint32_t>(eol - colon - 2);
    ref.kind = http::classify(lines.substr(pos, colon - pos));
    head->headers.push_back(ref);
    pos = eol + 2;
  }
}

// ---- Store ----

Store::Store(std::string dir, uint64_t max_size, size_t slots) : dir_(std::move(dir)), max_size_(max_size) {
  size_t n = std::bit_ceil(std::max(slots, kWindow * 4));
  slots_ = static_cast<Slot*>(::operator new(n * sizeof(Slot), std::align_val_t(64)));
  memset(static_cast<void*>(slots_), 0, n * sizeof(Slot));
  atime_ = new std::atomic<uint32_t>[n];
  tag_ = new std::atomic<uint16_t>[n];
  for (size_t i = 0; i < n; i++) {
    atime_[i].store(0, std::memory_order_relaxed);
    tag_[i].store(0, std::memory_order_relaxed);
  }
  mask_ = n - 1;
  RAND_bytes(reinterpret_cast<uint8_t*>(seed_), sizeof seed_);
  epoch_ms_ = static_cast<int64_t>(steady_ms()) - 10;
}

Store::~Store() {
  ::operator delete(slots_, std::align_val_t(64));
  delete[] atime_;
  delete[] tag_;
}

uint64_t Store::hash(std::string_view key) const {
  uint64_t h = SIPHASH_24(seed_, reinterpret_cast<const uint8_t*>(key.data()), key.size()) & ~uint64_t(1);
  return h == 0 ? 2 : h;
}

uint32_t Store::now_tick() const { return static_cast<uint32_t>((static_cast<int64_t>(steady_ms()) - epoch_ms_) / 10); }

Store::Found Store::find(uint64_t hash) const {
  size_t base = hash & mask_;
  for (size_t i = 0; i < kWindow; i++) {
    size_t at = (base + i) & mask_;
    const Slot* s = &slots_[at];
    if (load(&s->key) != hash) continue;
    uint64_t v = load(&s->val);
    if (load(&s->key) == hash && v) return {id_of(v), at};
  }
  return {};
}

void Store::touch(size_t slot, uint32_t now) {
  if (atime_[slot].load(std::memory_order_relaxed) != now) atime_[slot].store(now, std::memory_order_relaxed);
}

bool Store::claim(uint64_t hash, uint64_t now_ms, uint64_t until_ms) {
  uint64_t key = hash | 1;
  size_t base = key & mask_;
  for (;;) {
    size_t free_at = SIZE_MAX;
    uint64_t free_key = 0, free_val = 0;
    bool raced = false;
    for (size_t i = 0; i < kWindow; i++) {
      Slot* s = &slots_[(base + i) & mask_];
      uint64_t k = load(&s->key), v = load(&s->val);
      if (k == key) {
        if (v > now_ms) return false;  // claimed by another
        if (cas(s, k, v, key, until_ms)) return true;
        raced = true;
        break;
      }
      bool expired_claim = (k & 1) && v <= now_ms;
      if (free_at == SIZE_MAX && (k == 0 || expired_claim)) free_at = (base + i) & mask_, free_key = k, free_val = v;
    }
    if (raced) continue;
    if (free_at == SIZE_MAX) return true;  // no room to say so: this one fills, others may too
    if (cas(&slots_[free_at], free_key, free_val, key, until_ms)) return true;
  }
}

bool Store::claimed(uint64_t hash, uint64_t now_ms) const {
  uint64_t key = hash | 1;
  size_t base = key & mask_;
  for (size_t i = 0; i < kWindow; i++) {
    const Slot* s = &slots_[(base + i) & mask_];
    if (load(&s->key) == key) return load(&s->val) > now_ms;
  }
  return false;
}

void Store::unclaim(uint64_t hash) {
  uint64_t key = hash | 1;
  size_t base = key & mask_;
  for (size_t i = 0; i < kWindow; i++) {
    Slot* s = &slots_[(base + i) & mask_];
    uint64_t k = load(&s->key), v = load(&s->val);
    if (k == key) {
      cas(s, k, v, 0, 0);
      return;
    }
  }
}

uint16_t Store::tag(std::string_view route) {
  std::lock_guard<std::mutex> g(tags_mu_);
  auto it = tags_.find(std::string(route));
  if (it != tags_.end()) return it->second;
  if (tags_.size() + 1 >= kTags) return 0;
  uint16_t t = static_cast<uint16_t>(tags_.size() + 1);
  tags_.emplace(std::string(route), t);
  return t;
}

// A slot's object counted in (add) or out of the totals and its route's.
void Store::account(size_t slot, uint64_t val, bool add) {
  uint64_t b = bytes_of(val);
  std::atomic<uint64_t>& r = route_bytes_[tag_[slot].load(std::memory_order_relaxed)];
  if (add) {
    bytes_.fetch_add(b, std::memory_order_relaxed);
    r.fetch_add(b, std::memory_order_relaxed);
  } else {
    bytes_.fetch_sub(std::min(b, bytes_.load(std::memory_order_relaxed)), std::memory_order_relaxed);
    r.fetch_sub(std::min(b, r.load(std::memory_order_relaxed)), std::memory_order_relaxed);
  }
}

bool Store::drop_slot(size_t i, uint64_t key, uint64_t val, bool eviction) {
  if (!cas(&slots_[i], key, val, 0, 0)) return false;
  account(i, val, false);
  objects_.fetch_sub(1, std::memory_order_relaxed);
  if (eviction) stats.evictions.fetch_add(1, std::memory_order_relaxed);
  unlink(path(id_of(val)).c_str());
  return true;
}

void Store::publish(uint64_t hash, uint64_t id, uint64_t size, uint16_t tag, uint64_t route_max) {
  uint64_t val = pack(id, size);
  size_t base = hash & mask_;
  for (;;) {
    size_t free_at = SIZE_MAX, oldest_at = SIZE_MAX;
    uint32_t oldest = UINT32_MAX;
    uint64_t ok_ = 0, ov = 0;
    bool done = false, raced = false;
    for (size_t i = 0; i < kWindow && !done; i++) {
      size_t at = (base + i) & mask_;
      Slot* s = &slots_[at];
      uint64_t k = load(&s->key), v = load(&s->val);
      if (k == hash) {  // a new version: the old file goes
        if (!cas(s, k, v, hash, val)) {
          raced = true;
          break;
        }
        account(at, v, false);
        tag_[at].store(tag, std::memory_order_relaxed);
        account(at, val, true);
        atime_[at].store(now_tick(), std::memory_order_relaxed);
        if (id_of(v) != id) unlink(path(id_of(v)).c_str());
        done = true;
        break;
      }
      if (k == 0 && free_at == SIZE_MAX) free_at = at;
      if (k != 0 && !(k & 1) && atime_[at].load(std::memory_order_relaxed) < oldest)
        oldest = atime_[at].load(std::memory_order_relaxed), oldest_at = at, ok_ = k, ov = v;
    }
    if (raced) continue;
    if (!done) {
      if (free_at == SIZE_MAX) {
        if (oldest_at == SIZE_MAX) {  // a window of claims only: not stored
          unlink(path(id).c_str());
          return;
        }
        drop_slot(oldest_at, ok_, ov, true);  // the window is full: its least recently used goes
        continue;
      }
      if (!cas(&slots_[free_at], 0, 0, hash, val)) continue;
      tag_[free_at].store(tag, std::memory_order_relaxed);
      account(free_at, val, true);
      atime_[free_at].store(now_tick(), std::memory_order_relaxed);
      objects_.fetch_add(1, std::memory_order_relaxed);
    }
    break;
  }
  if (tag && route_max && route_bytes(tag) > route_max) evict(tag, route_max);
  if (max_size_ && bytes() > max_size_) evict(0, max_size_);
}

void Store::evict(uint16_t only_tag, uint64_t limit) {
  // Approximated LRU (as Redis does): of 16 objects found from a random slot on (of one route's, when
  // only_tag), the least recently used goes; again while over the limit (a bounded number of rounds per store:
  // the next store goes on).
  uint64_t r;
  RAND_bytes(reinterpret_cast<uint8_t*>(&r), sizeof r);
  auto over = [&] { return only_tag ? route_bytes(only_tag) > limit : bytes() > limit; };
  for (int round = 0; round < 64 && over(); round++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    size_t best = SIZE_MAX, seen = 0, at = (r >> 17) & mask_;
    uint32_t oldest = UINT32_MAX;
    uint64_t bk = 0, bv = 0;
    for (size_t n = 0; n <= mask_ && seen < 16; n++, at = (at + 1) & mask_) {
      uint64_t k = load(&slots_[at].key), v = load(&slots_[at].val);
      if (k == 0 || (k & 1) || (only_tag && tag_[at].load(std::memory_order_relaxed) != only_tag)) continue;
      seen++;
      uint32_t t = atime_[at].load(std::memory_order_relaxed);
      if (t < oldest) best = at, oldest = t, bk = k, bv = v;
    }
    if (best == SIZE_MAX) return;
    drop_slot(best, bk, bv, true);
  }
}

void Store::remove(uint64_t hash, uint64_t id) {
  size_t base = hash & mask_;
  for (size_t i = 0; i < kWindow; i++) {
    size_t at = (base + i) & mask_;
    uint64_t k = load(&slots_[at].key), v = load(&slots_[at].val);
    if (k == hash && (id == 0 || id_of(v) == id)) {
      drop_slot(at, k, v, false);
      return;
    }
  }
}

uint64_t Store::new_id() {
  uint64_t id = 0;
  while (id == 0) {
    RAND_bytes(reinterpret_cast<uint8_t*>(&id), sizeof id);
    id &= kIdMask;
  }
  return id;
}

std::string Store::path(uint64_t id) const {
  char name[32];
  snprintf(name, sizeof name, "/%02x/%010llx", static_cast<unsigned>(id & 0xff), static_cast<unsigned long long>(id));
  return dir_ + name;
}

std::string Store::tmp_path(uint64_t id) const {
  char name[32];
  snprintf(name, sizeof name, "/tmp/%010llx", static_cast<unsigned long long>(id));
  return dir_ + name;
}

void Store::error(const char* what, const std::string& p, int err) {
  stats.errors.fetch_add(1, std::memory_order_relaxed);
  int64_t now = static_cast<int64_t>(steady_ms() / 1000), last = last_log_.load(std::memory_order_relaxed);
  if (now - last >= 10 && last_log_.compare_exchange_strong(last, now))
    PX_WARN("cache: %s %s: %s (the response is served, not stored)", what, p.c_str(), strerror(err));
}

bool Store::open(std::string* error) {
  if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    if (errno == ENOENT) {  // (its parent, the data directory, is not made yet: the first store makes it)
      PX_INFO("cache %s: made at the first store", dir_.c_str());
      return true;
    }
    *error = "cache_dir " + dir_ + ": " + strerror(errno);
    return false;
  }
  std::string tmp = dir_ + "/tmp";
  if (mkdir(tmp.c_str(), 0700) != 0 && errno != EEXIST) {
    *error = "cache_dir " + tmp + ": " + strerror(errno);
    return false;
  }
  if (DIR* d = opendir(tmp.c_str())) {  // a writer's leftovers from before a crash
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
  }
  // Rebuild the index from the files: each one's key (read from its header) names its slot. Two files of one
  // key (a crash between a publish and an unlink) keep the newer.
  struct Seen {
    uint64_t id;
    int64_t when;
  };
  std::unordered_map<uint64_t, Seen> seen;
  size_t kept = 0, removed = 0;
  for (int sub = 0; sub < 256; sub++) {
    char name[8];
    snprintf(name, sizeof name, "/%02x", sub);
    std::string sd = dir_ + name;
    DIR* d = opendir(sd.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char* end = nullptr;
      uint64_t id = strtoull(e->d_name, &end, 16);
      std::string p = sd + "/" + e->d_name;
      int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
      struct stat sb {};
      FileHeader h{};
      std::string key;
      bool ok = fd >= 0 && *end == 0 && strlen(e->d_name) == 10 && id && (id & 0xff) == uint64_t(sub) &&
                fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && read_all(fd, reinterpret_cast<char*>(&h), sizeof h, 0) &&
                header_ok(h, static_cast<uint64_t>(sb.st_size));
      if (ok) {
        key.resize(h.key_len);
        ok = read_all(fd, key.data(), key.size(), sizeof h);
      }
      if (fd >= 0) close(fd);
      if (!ok) {
        unlink(p.c_str());
        removed++;
        continue;
      }
      uint64_t hs = hash(key);
      auto [it, fresh] = seen.try_emplace(hs, Seen{id, h.response_time});
      if (!fresh) {
        if (it->second.when > h.response_time) {
          unlink(p.c_str());
          continue;
        }
        unlink(path(it->second.id).c_str());
        it->second = Seen{id, h.response_time};
      }
      publish(hs, id, static_cast<uint64_t>(sb.st_size), tag(std::string_view(key).substr(0, key.find('\n'))));
      kept++;
    }
    closedir(d);
  }
  if (kept || removed)
    PX_INFO("cache %s: %zu objects (%llu bytes) found, %zu unreadable files removed", dir_.c_str(), kept,
            static_cast<unsigned long long>(bytes()), removed);
  return true;
}

// ---- Object, Local: one worker's view ----

Object::~Object() {
  if (map) munmap(map, map_len);
  if (fd >= 0) close(fd);
}

Local::~Local() {
  for (auto& [h, o] : table_) {
    o->prev = o->next = nullptr;
    if (--o->refs == 0) delete o;
  }
}

void Local::lru_front(Object* o) {
  if (lru_ == o) return;
  if (o->next) {  // unlink
    o->prev->next = o->next;
    o->next->prev = o->prev;
  }
  if (!lru_) {
    o->prev = o->next = o;
  } else {
    o->next = lru_;
    o->prev = lru_->prev;
    lru_->prev->next = o;
    lru_->prev = o;
  }
  lru_ = o;
}

void Local::drop(Object* o) {
  table_.erase(o->hash);
  if (o->next == o) {
    lru_ = nullptr;
  } else {
    o->prev->next = o->next;
    o->next->prev = o->prev;
    if (lru_ == o) lru_ = o->next;
  }
  o->prev = o->next = nullptr;
  used_ -= o->mem.size();
  if (o->map) maps_--;
  if (--o->refs == 0) delete o;
}

void Local::trim() {
  while (lru_ && (used_ > memory_ || maps_ > kMaxMaps || table_.size() > 65536)) drop(lru_->prev);
}

void Local::release(Object* o) {
  if (--o->refs == 0) delete o;
}

Object* Local::load(uint64_t id, uint64_t hash) {
  std::string p = store_->path(id);
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat sb {};
  auto o = std::make_unique<Object>();
  bool ok = fstat(fd, &sb) == 0 && read_all(fd, reinterpret_cast<char*>(&o->h), sizeof o->h, 0) &&
            header_ok(o->h, static_cast<uint64_t>(sb.st_size));
  const char* base = nullptr;
  if (ok && o->h.body_len <= kInline) {
    o->mem.resize(static_cast<size_t>(sb.st_size));
    ok = read_all(fd, o->mem.data(), o->mem.size(), 0);
    base = o->mem.data();
  } else if (ok) {
    void* m = mmap(nullptr, static_cast<size_t>(sb.st_size), PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      ok = false;
    } else {
      o->map = m;
      o->map_len = static_cast<size_t>(sb.st_size);
      base = static_cast<const char*>(m);
      o->fd = fd;  // (kept for sendfile)
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  if (!ok) return nullptr;
  const char* p2 = base + sizeof(FileHeader);
  o->key.assign(p2, o->h.key_len);
  p2 += o->h.key_len;
  o->vary.assign(p2, o->h.vary_len);
  p2 += o->h.vary_len;
  parse_head_lines(std::string_view(p2, o->h.head_len), &o->head);
  o->head.status = o->h.status;
  p2 += o->h.head_len;
  o->body = p2;
  o->id = id;
  o->hash = hash;
  if (o->map) {
    o->mem.clear();
  } else {
    o->mem.shrink_to_fit();
  }
  return o.release();
}

Object* Local::get(uint64_t hash, std::string_view key) {
  Store::Found f = store_->find(hash);
  auto it = table_.find(hash);
  Object* o = it == table_.end() ? nullptr : it->second;
  if (o && o->id != f.id) {  // replaced or removed since this worker read it
    drop(o);
    o = nullptr;
  }
  if (!f.id) return nullptr;
  if (!o) {
    o = load(f.id, hash);
    if (!o) {
      store_->remove(hash, f.id);  // its file is gone (or not px's): the index forgets it
      return nullptr;
    }
    o->refs = 1;
    table_.emplace(hash, o);
    used_ += o->mem.size();
    if (o->map) maps_++;
    o->prev = o->next = nullptr;
    lru_front(o);
    trim();
    if (!o->next) return nullptr;  // (trimmed at once: larger than the worker's memory)
  } else {
    lru_front(o);
  }
  if (o->key != key) return nullptr;  // two keys, one hash: a miss
  store_->touch(f.slot, store_->now_tick());
  o->refs++;
  return o;
}

// ---- Writer ----

bool Writer::begin(Store* s, const FileHeader& h, std::string_view key, std::string_view vary, std::string_view head,
                   uint64_t max_body) {
  abandon();
  store_ = s;
  h_ = h;
  tag_ = 0;
  route_max_ = 0;
  memcpy(h_.magic, kMagic, 8);
  h_.key_len = static_cast<uint32_t>(key.size());
  h_.vary_len = static_cast<uint32_t>(vary.size());
  h_.head_len = static_cast<uint32_t>(head.size());
  h_.body_len = 0;
  h_.stored_ms = static_cast<int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  max_body_ = max_body;
  id_ = s->new_id();
  buf_.clear();
  buf_.append(reinterpret_cast<const char*>(&h_), sizeof h_);
  buf_.append(key);
  buf_.append(vary);
  buf_.append(head);
  written_ = 0;
  return true;
}

bool Writer::spill() {
  if (fd_ < 0) {
    std::string p = store_->tmp_path(id_);
    fd_ = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0 && errno == ENOENT) {  // the directory went away: made again
      mkdir(store_->dir().c_str(), 0700);
      mkdir((store_->dir() + "/tmp").c_str(), 0700);
      fd_ = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd_ < 0) {
      store_->error("cannot create", p, errno);
      return false;
    }
  }
  if (!write_all(fd_, buf_.data(), buf_.size(), static_cast<off_t>(written_))) {
    store_->error("cannot write", store_->tmp_path(id_), errno);
    return false;
  }
  written_ += buf_.size();
  buf_.clear();
  return true;
}

bool Writer::append(const char* data, size_t len) {
  if (!store_) return false;
  if (h_.body_len + len > max_body_) {
    abandon();
    return false;
  }
  h_.body_len += len;
  buf_.append(data, len);
  if (buf_.size() >= kSpill && !spill()) {
    abandon();
    return false;
  }
  return true;
}

bool Writer::commit(uint64_t hash) {
  if (!store_) return false;
  Store* s = store_;
  std::string tmp = s->tmp_path(id_);
  bool ok = spill() && write_all(fd_, reinterpret_cast<const char*>(&h_), sizeof h_, 0);
  if (!ok) {
    abandon();
    return false;
  }
  close(fd_);
  fd_ = -1;
  std::string dst = s->path(id_);
  if (rename(tmp.c_str(), dst.c_str()) != 0 && errno == ENOENT) {
    mkdir(dst.substr(0, dst.rfind('/')).c_str(), 0700);
    if (rename(tmp.c_str(), dst.c_str()) != 0) ok = false;
  }
  if (!ok || access(dst.c_str(), F_OK) != 0) {
    s->error("cannot place", dst, errno);
    unlink(tmp.c_str());
    store_ = nullptr;
    return false;
  }
  uint64_t total = sizeof h_ + uint64_t(h_.key_len) + h_.vary_len + h_.head_len + h_.body_len;
  s->publish(hash, id_, total, tag_, route_max_);
  s->stats.stores.fetch_add(1, std::memory_order_relaxed);
  s->stats.store_bytes.fetch_add(total, std::memory_order_relaxed);
  store_ = nullptr;
  return true;
}

void Writer::abandon() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
    if (store_) unlink(store_->tmp_path(id_).c_str());
  }
  buf_.clear();
  if (buf_.capacity() > kSpill * 2) std::string().swap(buf_);
  store_ = nullptr;
}

}  // namespace px::cache
