// pxadmind's write transactions (internal to src/admin): every change runs in
// one store write transaction through in_txn(), fails with a Result, and
// leaves its audit record in the same transaction.
#pragma once
#include <functional>
#include <string>

#include "admin/model.h"
#include "core/strings.h"
#include "store/keys.h"

namespace px::admin {

// "2026-11-24T10:00:00.000Z"
std::string now_rfc3339();

struct Tx {
  store::Store::Writer& w;
  std::string* err;
  Result res;
  bool failed = false;
  bool fail(Result r) {
    res = std::move(r);
    failed = true;
    return false;
  }
  bool load(const std::string& key, json* out, bool* found) {
    std::string v;
    if (!w.get(key, &v, found, err)) return false;
    if (*found) *out = json::parse(v, nullptr, false);
    return true;
  }
  bool audit(const std::string& who, const std::string& action, const std::string& resource, const json& before,
             const json& after) {
    std::string v;
    bool found;
    if (!w.get(store::keys::kAuditSeq, &v, &found, err)) return false;
    uint64_t seq = 0;
    if (found) parse_u64(v, &seq);
    seq++;
    std::string key = store::keys::audit(seq);
    json rec = {{"seq", seq},           {"time", now_rfc3339()}, {"credential", who}, {"action", action},
                {"resource", resource}, {"before", before},      {"after", after}};
    return w.put(key, rec.dump(), err) && w.put(store::keys::kAuditSeq, std::to_string(seq), err);
  }
  // Loads the resource a change is based on: 404 when it does not exist, 412 when
  // If-Match names another version.
  bool load_current(const std::string& kind, const std::string& name, uint64_t if_match, json* old, uint64_t* have) {
    bool found;
    if (!load(store::keys::resource(kind, name), old, &found)) return false;
    if (!found) return fail(Result::error(404, "", "no " + kind + " named '" + name + "'"));
    *have = old->value("version", uint64_t(0));
    if (if_match && *have != if_match)
      return fail(Result::error(412, "If-Match", "stale: the current version is " + std::to_string(*have),
                                {{"current_version", *have}}));
    return true;
  }
  // Index maintenance for routes: drop `old`'s claims, check and add `now`'s.
  bool reindex(const std::string& name, const json* old, const json* now);
  // A route's "tls": a certificate it names must be stored; "auto" on a wildcard host needs DNS-01.
  bool check_route_tls(const json& route, bool dns_hook);  // and, for "auto", note_acme_pending
  // A route's filters: each one pxd has, its config passing the filter's own check, its access lists stored.
  bool check_filters(const json& route);
  bool note_acme_pending(const json& resource);
  // A stream: its listen address free (other streams, pxd.conf's listeners), its access list and certificate stored.
  bool check_stream(const std::string& name, const json& stream, bool dns_hook);
  bool check_passthrough_hosts(const std::string& name, const json& route);
};

// Runs fn in one write transaction. fn returns false to abort (with tx.res set, or a store error).
Result in_txn(store::Store& st, const std::function<bool(Tx&)>& fn);

// A route's filters checked before it is written (Tx::check_filters, and import against the lists it brings):
// false with *out a 422 naming the field and the problem. has_acl: will this access list exist?
bool check_route_filters(const json& route, const std::string& at,
                         const std::function<bool(const std::string&)>& has_acl, Result* out);
// A filter's config alone, as a route would carry it (POST /v1/filters/check).
bool check_filter_config(const std::string& name, const json& config, const std::string& at,
                         const std::function<bool(const std::string&)>& has_acl, Result* out);

// "field: message" (as the validators report) → a 422 naming the field.
Result invalid(const std::string& err);

}  // namespace px::admin
