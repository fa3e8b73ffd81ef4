// px::cache store — the response cache's objects: files in pxd's cache_dir, an index every worker reads without
// a lock, and each worker's own view of the objects it serves.
//
// Objects. A stored response is one immutable file, cache_dir/XY/<id>: a fixed header (FileHeader), the key,
// the Vary names, the head ("Name: value\r\n" lines) and the body. A new version of a key (a refresh, a 304's
// new headers) is a new file with a new id; the old one is unlinked. Nothing is rewritten in place, so a worker
// still sending an old version keeps reading it (an open mapping survives an unlink).
//
// The index: how workers share it without locks. One table for the host (like core/shared_table.h): 16-byte
// slots {key hash, id and size} in windows of 16, written with one 16-byte compare-and-swap, read with two
// plain loads (a torn read only ever names a wrong file, whose stored key then does not match: a miss). A hit
// reads its slot and finds the object in the worker's own table (Local): no lock, no write to shared memory
// but the slot's access time, stored at most once a second per object. Workers write the index only when they
// store or drop an object. A key being filled is claimed in the same table (its hash with the low bit set,
// holding a deadline): other requests for it wait (stream/cache.cpp) instead of asking the upstream too.
//
// Restarts and binary upgrades: the index is rebuilt from the files' headers when pxd starts (open()); a file
// that is cut short or not px's is removed. Eviction: past cache_max_size, the least recently used of sampled
// objects go (Redis's approximated LRU); a full window evicts its oldest.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "http/parser.h"

namespace px::cache {

inline constexpr char kMagic[8] = {'P', 'X', 'C', 'A', 'C', 'H', 'E', '2'};

struct FileHeader {
  char magic[8];
  uint32_t key_len = 0, vary_len = 0, head_len = 0, flags = 0;
  uint64_t body_len = 0;
  int64_t response_time = 0;   // when the response (or the 304 that refreshed it) arrived, s since the epoch
  int64_t initial_age = 0;     // RFC 9111 4.2.3's corrected_initial_age
  int64_t lifetime = 0;        // freshness lifetime, s
  int64_t swr = -1, sie = -1;  // the response's stale-while-revalidate and stale-if-error, s (-1: none)
  int64_t stored_ms = 0;       // when this file was written, ms since the epoch (pxctl cache purge compares it)
  uint16_t status = 0;
  uint16_t pad[3] = {};
  enum : uint32_t {
    kVaryMarker = 1,      // no response: the key's Vary names, pointing at its variants' keys
    kNoCache = 2,         // no-cache: validate before every use
    kMustRevalidate = 4,  // must-revalidate, proxy-revalidate or s-maxage: never served stale unvalidated
    kAuthOk = 8,          // public, s-maxage or must-revalidate: may answer a request with Authorization
  };
};
static_assert(sizeof(FileHeader) == 88);

struct Stats {
  std::atomic<uint64_t> hits{0}, misses{0}, stores{0}, store_bytes{0}, evictions{0}, coalesced{0}, errors{0},
      revalidated{0}, stale{0};
  std::atomic<uint64_t> sendfile_bytes{0};  // body bytes sent by sendfile(2) (HTTP/1 over plain TCP)
};

class Store {
 public:
  static constexpr size_t kWindow = 16;
  // dir: cache_dir; max_size: cache_max_size (bytes of files); slots: index entries (rounded up to 2^n).
  Store(std::string dir, uint64_t max_size, size_t slots);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Makes the directory and rebuilds the index from its files. false: the directory cannot be used (error
  // says why); pxd goes on without a cache.
  bool open(std::string* error);
  const std::string& dir() const { return dir_; }

  uint64_t hash(std::string_view key) const;  // a key's index hash (seeded, low bit clear)
  struct Found {
    uint64_t id = 0;  // 0: none
    size_t slot = 0;
  };
  Found find(uint64_t hash) const;
  void touch(size_t slot, uint32_t now_s);  // a hit: the slot's access time, written once a second at most
  uint32_t now_tick() const;                // seconds since the store opened (access times)

  // Fills: the first request for a cold key claims it until `until_ms` (a steady clock, ms); the others see it
  // claimed and wait. A claim past its deadline is as good as none.
  bool claim(uint64_t hash, uint64_t now_ms, uint64_t until_ms);
  bool claimed(uint64_t hash, uint64_t now_ms) const;
  void unclaim(uint64_t hash);

  // The object `id` (its file in place, `bytes` long) is now the key's; the one it replaces is removed. `tag`
  // names its route (tag()); past `route_max` bytes of that route's, its least recently used go (0: no cap).
  void publish(uint64_t hash, uint64_t id, uint64_t bytes, uint16_t tag = 0, uint64_t route_max = 0);
  // A route's tag (1..kTags-1; 0 when there are too many names): its objects' bytes are counted under it.
  // Taken when a response is stored (a mutex: never on a hit).
  static constexpr size_t kTags = 4096;
  uint16_t tag(std::string_view route);
  uint64_t route_bytes(uint16_t tag) const { return route_bytes_[tag].load(std::memory_order_relaxed); }
  // Drops the key's object (an unsafe method's invalidation, a purge); `id` 0: whatever it is.
  void remove(uint64_t hash, uint64_t id = 0);

  uint64_t new_id();  // a fresh object id (random, 40 bits)
  std::string path(uint64_t id) const;
  std::string tmp_path(uint64_t id) const;

  // Something went wrong with the directory (full, read-only, gone): counted, and logged at most every 10 s.
  void error(const char* what, const std::string& path, int err);

  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t objects() const { return objects_.load(std::memory_order_relaxed); }
  uint64_t max_size() const { return max_size_; }
  Stats stats;

 private:
  struct alignas(16) Slot {
    uint64_t key, val;
  };
  void evict(uint16_t only_tag, uint64_t limit);  // LRU of sampled objects (of one route's, when only_tag)
  bool drop_slot(size_t i, uint64_t key, uint64_t val, bool eviction);
  void account(size_t slot, uint64_t val, bool add);
  void insert(uint64_t hash, uint64_t val, bool* replaced_ok);
  std::string dir_;
  uint64_t max_size_;
  Slot* slots_;
  std::atomic<uint32_t>* atime_;
  std::atomic<uint16_t>* tag_;  // each slot's route tag
  std::atomic<uint64_t> route_bytes_[kTags] = {};
  std::mutex tags_mu_;
  std::unordered_map<std::string, uint16_t> tags_;
  size_t mask_;
  uint64_t seed_[2];
  int64_t epoch_ms_;
  std::atomic<uint64_t> bytes_{0}, objects_{0};
  std::atomic<int64_t> last_log_{0};
};

// An object as one worker serves it: parsed once from its file, the body in memory (small ones) or mapped.
struct Object {
  uint64_t id = 0, hash = 0;
  FileHeader h{};
  std::string key, vary;
  http::Head head;  // status and fields, as stored
  std::string mem;  // small: the whole file
  void* map = nullptr;
  size_t map_len = 0;
  int fd = -1;  // a mapped object's file, kept open for sendfile
  const char* body = nullptr;
  uint32_t refs = 0;  // the worker's table, and each stream sending it
  Object *prev = nullptr, *next = nullptr;
  bool marker() const { return h.flags & FileHeader::kVaryMarker; }
  std::string_view etag() const { return head.get(std::string_view("etag")); }
  std::string_view last_modified() const { return head.get(std::string_view("last-modified")); }
  int64_t age(int64_t now) const { return h.initial_age + std::max<int64_t>(0, now - h.response_time); }
  ~Object();
};

// One worker's objects: hits find them here without touching another worker's memory.
class Local {
 public:
  Local(Store* s, uint64_t memory) : store_(s), memory_(memory) {}
  ~Local();
  // The key's current object (loaded from its file when the index names a new one), held for the caller
  // (release() it), or nullptr.
  Object* get(uint64_t hash, std::string_view key);
  void release(Object* o);
  Store* store() const { return store_; }

 private:
  Object* load(uint64_t id, uint64_t hash);
  void drop(Object* o);
  void lru_front(Object* o);
  void trim();
  Store* store_;
  uint64_t memory_;
  uint64_t used_ = 0;
  size_t maps_ = 0;
  std::unordered_map<uint64_t, Object*> table_;
  Object* lru_ = nullptr;  // most recent first (a ring)
};

// "Name: value\r\n" lines (a stored head, as px wrote it from a parsed one) into a Head's fields.
void parse_head_lines(std::string_view lines, http::Head* head);

// A response being stored: its file is written as the body comes, and published whole (commit) or removed.
class Writer {
 public:
  ~Writer() { abandon(); }
  // The head and metadata; false: the file cannot be started (counted by the store).
  bool begin(Store* s, const FileHeader& h, std::string_view key, std::string_view vary, std::string_view head,
             uint64_t max_body);
  void route(uint16_t tag, uint64_t route_max) {  // whose bytes it counts under, and that route's cap
    tag_ = tag;
    route_max_ = route_max;
  }
  bool append(const char* data, size_t len);  // false: over max_body, or a write failed (abandoned)
  // The body is whole: the file goes in place and the index names it. false: it could not be written.
  bool commit(uint64_t hash);
  void abandon();
  bool active() const { return store_ != nullptr; }
  uint64_t body_len() const { return h_.body_len; }

 private:
  bool spill();
  Store* store_ = nullptr;
  FileHeader h_{};
  uint64_t id_ = 0, max_body_ = 0, route_max_ = 0;
  uint16_t tag_ = 0;
  std::string buf_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

}  // namespace px::cache
