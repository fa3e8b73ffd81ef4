// px::fleet::Fleet — many px hosts on one configuration, kept in etcd (pxadmind(8), FLEET).
//
// Each host's pxadmind keeps serving its own LMDB store (pxd reads it as on one host). The fleet adds two
// things to it:
//   - Writes go through etcd. A change runs on the local store, is rolled back, and its key changes are
//     committed to etcd in one transaction that compares the fleet's serial key: it succeeds only if no
//     other write reached the fleet since the state the change was checked against. Otherwise this host
//     catches up and the change runs again (store::Store::write), so a fleet's writes are checked in one
//     order, as one host's are. The write returns once this host applied it.
//   - A follower (its own thread and loop) watches the fleet's prefix from the applied revision and applies
//     each change to the local store in one transaction, with the revision beside it
//     (store/keys.h, meta:fleet_revision). A compacted or broken history is a full resync: the whole prefix
//     at one revision replaces the local copy in one transaction.
//
// etcd keys: /px/<fleet>/<store key> for every key the fleet shares (store::keys::fleet_shared), and
// /px/<fleet>.serial, put by every write; /px/<fleet>.hosts/<host>, each host's status, bound to a lease.
#pragma once
#include <uv.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "fleet/etcd.h"
#include "store/store.h"

namespace px::fleet {

struct FleetOptions {
  EtcdOptions etcd;
  std::string name = "default";  // the fleet: its etcd prefix
  std::string host;              // this host's name (default: the hostname)
  std::string join;              // "", "replace" or "seed": what to do with a non-empty local store at the first start
  int host_ttl_s = 30;           // a stopped host's status stays listed this long; published every third of it
  std::string key_file;          // the fleet key: 32 bytes (raw, 64 hex digits or base64) sealing secrets in etcd
};

class Fleet final : public store::Committer {
 public:
  explicit Fleet(FleetOptions opt);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Joins (or rejoins) the fleet: checks the options, brings the local store up to date when etcd answers,
  // and starts following. A store that never joined needs etcd; one that did starts on what it has.
  bool start(store::Store* st, std::string* error);
  void stop();

  store::WriteFail commit(uint64_t base, const std::vector<store::Change>& changes, std::string* error) override;

  // {"name", "host", "etcd": {"reachable", "endpoint", "since", "last_error"}, "applied_revision", ...}
  json status();
  // Every host's published status (/px/<fleet>.hosts/<host>, bound to a lease: a host that stopped is gone
  // within FleetOptions::host_ttl_s), with its lag behind the fleet, and this host's own view. Blocking (one etcd
  // call).
  json hosts();
  // What this host adds to its published status (pxd's generation and whether it runs it); the follower's
  // thread calls it.
  void set_host_facts(std::function<json()> fn) { facts_ = std::move(fn); }

  // ACME in a fleet: /px/<fleet>.locks/acme/<name>, held on a lease while this host orders (blocking calls,
  // pxadmind's loop). False when another host holds it (*holder names it) or etcd does not answer.
  bool lock_acme(const std::string& name, std::string* holder);
  void unlock_acme(const std::string& name);
  // Whether every host that published its status applied this host's revision, and its pxd serves it.
  bool all_serve();

 private:
  struct Follower;
  bool resync(Etcd& etcd, std::string* error);
  bool seed(std::string* error);
  bool apply_events(const json& events, std::string* error);
  void set_applied(uint64_t rev);
  void set_reachable(bool ok, const std::string& error);
  bool wait_applied(uint64_t rev, uint64_t ms);
  std::string key(std::string_view store_key) const { return prefix_ + std::string(store_key); }
  // What goes into etcd for a store value, and back: secrets (certificates with their keys, ACME accounts,
  // dashboard accounts) sealed with the fleet key (AES-256-GCM, the store key as associated data).
  std::string to_etcd(std::string_view store_key, const std::string& value) const;
  bool from_etcd(std::string_view store_key, std::string* value, std::string* error) const;
  bool take(const std::string& etcd_key, std::string_view store_key, const json& kv, std::string* value,
            std::map<std::string, std::string>* rejected) const;

  FleetOptions opt_;
  std::string prefix_;     // "/px/<fleet>/"
  std::string serial_;     // "/px/<fleet>.serial"
  std::string hosts_;      // "/px/<fleet>.hosts/"
  std::string fleet_key_;  // 32 bytes
  std::function<json()> facts_;
  store::Store* st_ = nullptr;
  Etcd etcd_;  // the writer's (pxadmind's loop thread)

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t applied_ = 0;
  bool reachable_ = false;
  std::string last_error_;
  int64_t since_ = 0;  // unix seconds: when reachability last changed
  uint64_t resyncs_ = 0;
  std::map<std::string, std::string> rejected_;  // store key → why etcd's value for it was not applied

  std::map<std::string, std::string> acme_leases_;  // certificate name → the lease its lock is held on
  std::unique_ptr<Follower> follower_;
  std::thread thread_;
};

}  // namespace px::fleet
