// px::store — the LMDB store that holds px's configuration.
//
// Start here: one LMDB environment in the data directory (data.mdb + lock.mdb).
// pxadmind is the only writer (px-store, the test helper, writes through the
// same API); pxd and `pxctl status` only read. Every change is one write
// transaction and bumps `meta:generation` in that same transaction, so a
// reader sees a whole change or none of it.
//
// The key space (what is stored under which key, and the schema version) is
// owned by store/keys.h.
#pragma once
#include <lmdb.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "store/keys.h"

namespace px::store {

// The one place LMDB's error codes become text.
std::string lmdb_error(int rc);

// What a write changed, key by key, in order (a fleet's commit: fleet/fleet.h).
struct Change {
  std::string key;
  std::string value;
  bool del = false;
};

// Why a write failed.
enum class WriteFail : uint8_t {
  none,
  store,        // LMDB, or the write's own function said no (its error)
  conflict,     // a fleet: the fleet kept changing under the write; it was retried and gave up
  unavailable,  // a fleet: etcd could not be reached or did not answer
};

// Where writes go instead of straight into the store: a fleet's etcd. The write ran on this store's current
// state and was rolled back; `changes` is what it did, `base` the etcd revision that state was at. The
// committer returns none once the changes are committed and this store has applied them, conflict when the
// fleet moved past `base` first (the store has then caught up, and the write runs again), or why it failed.
class Committer {
 public:
  virtual WriteFail commit(uint64_t base, const std::vector<Change>& changes, std::string* error) = 0;

 protected:
  ~Committer() = default;
};

class Store {
 public:
  Store() = default;
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Opens (and for writers creates) the environment in `dir`.
  bool open(const std::string& dir, bool read_only, std::string* error);
  bool is_open() const { return env_ != nullptr; }
  const std::string& dir() const { return dir_; }

  // Current generation (0 when never written). Cheap: one short read txn.
  bool generation(uint64_t* out, std::string* error);

  // Calls fn(key, value) for every key with `prefix`, inside one read txn that
  // also reports the generation it saw.
  bool scan(std::string_view prefix, uint64_t* generation,
            const std::function<void(std::string_view, std::string_view)>& fn, std::string* error);
  bool get(std::string_view key, std::string* value, bool* found, std::string* error);

  // A transaction's view: reads see one consistent state.
  struct Txn {
    MDB_txn* txn;
    MDB_dbi dbi;
    bool get(std::string_view key, std::string* value, bool* found, std::string* error);
    // Calls fn(key, value) for keys with `prefix`, from `start` (or the prefix) on, while fn returns true.
    bool scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn,
              std::string* error, std::string_view start = {});
  };
  // A write transaction: put/del besides the reads; the generation bumps once.
  struct Writer : Txn {
    bool put(std::string_view key, std::string_view value, std::string* error);
    bool del(std::string_view key, std::string* error);  // missing key is not an error
    std::vector<Change>* record = nullptr;               // with a committer: what the write changed
  };
  using WriteFn = std::function<bool(Writer&, std::string*)>;
  // One change: fn runs in a write transaction. With a committer, the change goes through it (see Committer)
  // and fn may run more than once; `fail` says why a write failed.
  bool write(const WriteFn& fn, uint64_t* new_generation, std::string* error, WriteFail* fail = nullptr);
  // Writes this store directly, past any committer: the fleet's follower applying what etcd holds.
  bool apply(const WriteFn& fn, uint64_t* new_generation, std::string* error);
  void set_committer(Committer* c) { committer_ = c; }
  bool read(const std::function<bool(Txn&, std::string*)>& fn, std::string* error);

 private:
  bool begin_read(MDB_txn** txn, std::string* error);
  bool write_through(const WriteFn& fn, uint64_t* new_generation, std::string* error, WriteFail* fail);
  MDB_env* env_ = nullptr;
  Committer* committer_ = nullptr;
  MDB_dbi dbi_ = 0;
  bool read_only_ = true;
  std::string dir_;
};

}  // namespace px::store
