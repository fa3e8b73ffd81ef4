#include "store/store.h"

#include <chrono>

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "core/strings.h"

namespace px::store {

std::string lmdb_error(int rc) {
  switch (rc) {
    case ENOENT: return "no store here yet (data.mdb missing)";
    case EACCES: return "permission denied";
    case MDB_MAP_FULL: return "store is full (map size reached)";
    case MDB_READERS_FULL: return "too many readers";
    case MDB_INVALID: return "not an LMDB store (data.mdb is corrupt or of another format)";
    case MDB_VERSION_MISMATCH: return "LMDB version mismatch";
    default: return mdb_strerror(rc);
  }
}

static MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

Store::~Store() {
  if (env_) mdb_env_close(env_);
}

bool Store::open(const std::string& dir, bool read_only, std::string* error) {
  dir_ = dir;
  read_only_ = read_only;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (read_only || ::mkdir(dir.c_str(), 0750) != 0) {
      *error = "data directory " + dir + ": " + std::strerror(errno);
      return false;
    }
  }
  int rc = mdb_env_create(&env_);
  if (rc == 0) rc = mdb_env_set_maxreaders(env_, 512);
  if (rc == 0 && !read_only) rc = mdb_env_set_mapsize(env_, size_t(1) << 30);
  // MDB_NOTLS: read txns are not tied to the thread that made them.
  unsigned flags = MDB_NOTLS | (read_only ? MDB_RDONLY : 0);
  if (rc == 0) rc = mdb_env_open(env_, dir.c_str(), flags, 0640);
  if (rc != 0) {
    *error = "store " + dir + ": " + lmdb_error(rc);
    if (env_) mdb_env_close(env_);
    env_ = nullptr;
    return false;
  }
  MDB_txn* txn;
  rc = mdb_txn_begin(env_, nullptr, read_only ? MDB_RDONLY : 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, nullptr, 0, &dbi_);
  if (rc == 0 && !read_only) {
    MDB_val k = val(keys::kSchema), v;
    int g = mdb_get(txn, dbi_, &k, &v);
    if (g == MDB_NOTFOUND) {
      std::string s = std::to_string(keys::kSchemaVersion);
      MDB_val sv = val(s);
      rc = mdb_put(txn, dbi_, &k, &sv, 0);
    } else if (g == 0) {
      std::string have(static_cast<char*>(v.mv_data), v.mv_size);
      if (have != std::to_string(keys::kSchemaVersion)) {
        mdb_txn_abort(txn);
        *error = "store " + dir + ": schema version " + have + ", this px understands " +
                 std::to_string(keys::kSchemaVersion);
        mdb_env_close(env_);
        env_ = nullptr;
        return false;
      }
    } else {
      rc = g;
    }
  }
  if (rc == 0)
    rc = read_only ? (mdb_txn_abort(txn), 0) : mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  if (rc != 0) {
    *error = "store " + dir + ": " + lmdb_error(rc);
    mdb_env_close(env_);
    env_ = nullptr;
    return false;
  }
  return true;
}

bool Store::begin_read(MDB_txn** txn, std::string* error) {
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, txn);
  if (rc == MDB_MAP_RESIZED) {
    // The writer grew the map: adopt the new size and retry.
    mdb_env_set_mapsize(env_, 0);
    rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, txn);
  }
  if (rc != 0) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  return true;
}

static uint64_t decode_gen(const MDB_val& v) {
  return keys::decode_generation({static_cast<const char*>(v.mv_data), v.mv_size});
}

bool Store::generation(uint64_t* out, std::string* error) {
  MDB_txn* txn;
  if (!begin_read(&txn, error)) return false;
  MDB_val k = val(keys::kGeneration), v;
  int rc = mdb_get(txn, dbi_, &k, &v);
  *out = rc == 0 ? decode_gen(v) : 0;
  mdb_txn_abort(txn);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  return true;
}

bool Store::get(std::string_view key, std::string* value, bool* found, std::string* error) {
  MDB_txn* txn;
  if (!begin_read(&txn, error)) return false;
  MDB_val k = val(key), v;
  int rc = mdb_get(txn, dbi_, &k, &v);
  *found = rc == 0;
  if (rc == 0) value->assign(static_cast<char*>(v.mv_data), v.mv_size);
  mdb_txn_abort(txn);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  return true;
}

bool Store::scan(std::string_view prefix, uint64_t* generation,
                 const std::function<void(std::string_view, std::string_view)>& fn, std::string* error) {
  MDB_txn* txn;
  if (!begin_read(&txn, error)) return false;
  MDB_val k = val(keys::kGeneration), v;
  int rc = mdb_get(txn, dbi_, &k, &v);
  if (generation) *generation = rc == 0 ? decode_gen(v) : 0;
  MDB_cursor* cur;
  rc = mdb_cursor_open(txn, dbi_, &cur);
  if (rc != 0) {
    mdb_txn_abort(txn);
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  k = val(prefix);
  rc = mdb_cursor_get(cur, &k, &v, k.mv_size ? MDB_SET_RANGE : MDB_FIRST);
  while (rc == 0) {
    std::string_view key(static_cast<char*>(k.mv_data), k.mv_size);
    if (key.substr(0, prefix.size()) != prefix) break;
    fn(key, std::string_view(static_cast<char*>(v.mv_data), v.mv_size));
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  return true;
}

bool Store::Writer::put(std::string_view key, std::string_view value, std::string* error) {
  MDB_val k = val(key), v = val(value);
  int rc = mdb_put(txn, dbi, &k, &v, 0);
  if (rc != 0) *error = "store write " + std::string(key) + ": " + lmdb_error(rc);
  if (rc == 0 && record) record->push_back(Change{std::string(key), std::string(value), false});
  return rc == 0;
}

bool Store::Writer::del(std::string_view key, std::string* error) {
  MDB_val k = val(key);
  int rc = mdb_del(txn, dbi, &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store delete " + std::string(key) + ": " + lmdb_error(rc);
    return false;
  }
  if (rc == 0 && record) record->push_back(Change{std::string(key), {}, true});
  return true;
}

bool Store::Txn::get(std::string_view key, std::string* value, bool* found, std::string* error) {
  MDB_val k = val(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  *found = rc == 0;
  if (rc == 0) value->assign(static_cast<char*>(v.mv_data), v.mv_size);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store read " + std::string(key) + ": " + lmdb_error(rc);
    return false;
  }
  return true;
}

bool Store::Txn::scan(std::string_view prefix, const std::function<bool(std::string_view, std::string_view)>& fn,
                      std::string* error, std::string_view start) {
  MDB_cursor* cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc != 0) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  MDB_val k = val(start.empty() ? prefix : start), v;
  rc = mdb_cursor_get(cur, &k, &v, k.mv_size ? MDB_SET_RANGE : MDB_FIRST);  // LMDB takes no empty key
  while (rc == 0) {
    std::string_view key(static_cast<char*>(k.mv_data), k.mv_size);
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!fn(key, std::string_view(static_cast<char*>(v.mv_data), v.mv_size))) break;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *error = "store read: " + lmdb_error(rc);
    return false;
  }
  return true;
}

bool Store::read(const std::function<bool(Txn&, std::string*)>& fn, std::string* error) {
  MDB_txn* txn;
  if (!begin_read(&txn, error)) return false;
  Txn t{txn, dbi_};
  bool ok = fn(t, error);
  mdb_txn_abort(txn);
  return ok;
}

bool Store::write(const WriteFn& fn, uint64_t* new_generation, std::string* error, WriteFail* fail) {
  if (fail) *fail = WriteFail::none;
  if (!committer_) {
    bool ok = apply(fn, new_generation, error);
    if (!ok && fail) *fail = WriteFail::store;
    return ok;
  }
  return write_through(fn, new_generation, error, fail);
}

// A fleet's write: run fn on the current state, roll it back, hand its changes to the committer. When the
// fleet moved on first, the committer caught this store up, and fn runs again on the new state: the fleet's
// writes are serialised as one host's are.
bool Store::write_through(const WriteFn& fn, uint64_t* new_generation, std::string* error, WriteFail* fail) {
  WriteFail why = WriteFail::store;
  // Each conflict means another write went through, so the fleet moves on; under a burst of writers a write
  // may lose many rounds, and gives up only after 30 s of them.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    MDB_txn* txn;
    int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
    if (rc != 0) {
      *error = "store write: " + lmdb_error(rc);
      break;
    }
    std::vector<Change> changes;
    Writer w{{txn, dbi_}};
    w.record = &changes;
    std::string rev;
    bool found = false;
    bool ok = fn(w, error) && w.get(keys::kFleetRevision, &rev, &found, error);
    mdb_txn_abort(txn);
    if (!ok) break;
    std::erase_if(changes, [](const Change& c) { return !keys::fleet_shared(c.key); });
    uint64_t base = 0;
    if (found && !parse_u64(rev, &base)) {
      *error = std::string(keys::kFleetRevision) + ": '" + rev + "' is not a revision";
      break;
    }
    why = changes.empty() ? WriteFail::none : committer_->commit(base, changes, error);
    if (why != WriteFail::conflict) break;
    if (std::chrono::steady_clock::now() > until) {
      *error = "the fleet kept changing under this write for 30 s: try again";
      break;
    }
  }
  if (fail) *fail = why;
  if (why != WriteFail::none) return false;
  if (new_generation) return generation(new_generation, error);
  return true;
}

bool Store::apply(const WriteFn& fn, uint64_t* new_generation, std::string* error) {
  if (read_only_) {
    *error = "store opened read-only";
    return false;
  }
  MDB_txn* txn;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0) {
    *error = "store write: " + lmdb_error(rc);
    return false;
  }
  Writer w{{txn, dbi_}};
  if (!fn(w, error)) {
    mdb_txn_abort(txn);
    return false;
  }
  MDB_val k = val(keys::kGeneration), v;
  rc = mdb_get(txn, dbi_, &k, &v);
  uint64_t g = rc == 0 ? decode_gen(v) + 1 : 1;
  std::string enc = keys::encode_generation(g);
  MDB_val nv = val(enc);
  rc = mdb_put(txn, dbi_, &k, &nv, 0);
  if (rc == 0)
    rc = mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  if (rc != 0) {
    *error = "store commit: " + lmdb_error(rc);
    return false;
  }
  if (new_generation) *new_generation = g;
  return true;
}

}  // namespace px::store
