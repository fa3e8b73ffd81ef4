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

#include "store/keys.h"

namespace px::store {

// The one place LMDB's error codes become text.
std::string lmdb_error(int rc);

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
  };
  bool write(const std::function<bool(Writer&, std::string*)>& fn, uint64_t* new_generation, std::string* error);
  bool read(const std::function<bool(Txn&, std::string*)>& fn, std::string* error);

 private:
  bool begin_read(MDB_txn** txn, std::string* error);
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  bool read_only_ = true;
  std::string dir_;
};

}  // namespace px::store
