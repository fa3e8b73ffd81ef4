// px::admin — the resources pxadmind serves, over the store. Start here.
//
// Every change is one store write transaction (so the generation bumps once
// and pxd sees all of it or none), is validated before anything is written,
// carries a version checked against If-Match, and leaves an audit record in
// the same transaction.
//
// The keys it reads and writes are named in store/keys.h.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include "core/password.h"

#include <map>
#include <string>
#include <vector>

#include "store/store.h"

namespace px::admin {

using json = nlohmann::json;

// What an operation answers: an HTTP status, a JSON body, and the resource version for ETag.
struct Result {
  int status = 200;
  json body;
  uint64_t version = 0;
  std::string set_cookie;  // the web dashboard's new session id for Set-Cookie ("-": clear it; "": none)
  static Result error(int status, const std::string& field, const std::string& message, json extra = nullptr);
};

struct AuditQuery {
  std::string resource;    // "route/shop", or a prefix like "route/"
  std::string action;      // "route.update"
  std::string credential;  // "uid:1000", "token:ci"
  uint64_t since = 0;      // seq greater than this
  size_t limit = 100;
};

// A pxd's status file (pxd.conf status_file): its fields, and whether that pxd runs ("running").
json pxd_status(const std::string& file);

// pxctl trace (observe/trace.h): a token for each running pxd (201), and a traced request's record (taken once).
Result create_trace(const std::vector<std::string>& pxd_status_files, const std::string& who);
// The requests each pxd recorded for a route (route.record): <status file>.records/<route>.jsonl.
Result route_records(const std::vector<std::string>& pxd_status_files, const std::string& route);
Result take_trace(const std::vector<std::string>& pxd_status_files, const std::string& id);
// The dashboard's live traffic: each running pxd's px_requests_total summed by route (requests, 5xx), read from
// its metrics listener (pxd.conf metrics_listen). The dashboard turns two readings into rates.
Result traffic(const std::vector<std::string>& pxd_status_files);
// pxctl cache stats: what each running pxd's cache holds and did (<status file>.cache), for one route or all.
Result cache_stats(const std::vector<std::string>& pxd_status_files, const std::string& route);

class Admin {
 public:
  explicit Admin(store::Store& st) : st_(st) {}

  // kind: "route" or "acl". if_match: 0 = no precondition.
  Result list(const std::string& kind);
  Result get(const std::string& kind, const std::string& name);
  // A filter's config checked as a route write would check it (pxctl filter check NAME --config JSON).
  Result check_filter(const std::string& name, const json& config);
  Result create(const std::string& kind, const json& body, const std::string& who);
  Result put(const std::string& kind, const std::string& name, const json& body, uint64_t if_match,
             const std::string& who);
  Result patch(const std::string& kind, const std::string& name, const json& merge, uint64_t if_match,
               const std::string& who);
  Result remove(const std::string& kind, const std::string& name, uint64_t if_match, const std::string& who);

  Result add_user(const std::string& acl, const json& body, const std::string& who);
  Result remove_user(const std::string& acl, const std::string& user, const std::string& who);

  Result export_config(bool include_keys = false);
  Result import_config(const json& doc, bool replace, bool dry_run, const std::string& who);

  Result audit(const AuditQuery& q);

  Result create_token(const json& body, const std::string& who);  // the secret is in the answer, once
  Result list_tokens();
  Result remove_token(const std::string& name, const std::string& who);
  // Returns the token's name, or "" when no stored token matches.
  std::string verify_token(const std::string& secret);

  Result status(const std::vector<std::string>& pxd_status_files);

  // The web dashboard's accounts (user:<name>; admin/ui_auth.h). Hashes only; never exported.
  Result list_accounts();
  Result create_account(const json& body, const std::string& who);  // {name, password, role}
  Result remove_account(const std::string& name, const std::string& who);
  json account(const std::string& name);  // the stored record, null when none
  bool any_account();
  // Enables TOTP (base32 secret) with recovery code hashes, or replaces the unused recovery hashes.
  Result set_account_totp(const std::string& name, const std::string& secret, const json& recovery,
                          const std::string& who);

  // Certificates (cert:<name>): checked on upload; private keys never leave through these.
  Result list_certs();
  Result get_cert(const std::string& name);
  Result put_cert(const std::string& name, const json& body, const std::string& who);
  Result remove_cert(const std::string& name, const std::string& who);
  // Asks the ACME manager to renew a certificate it keeps, now (202).
  Result renew_cert(const std::string& name, const std::string& who);

  // ACME bookkeeping (admin/acme_manager.h; records in store/keys.h).
  // The certificates routes ask for with "tls": "auto": certificate name → DNS names.
  std::map<std::string, std::vector<std::string>> acme_wanted();
  json acme_state(const std::string& name);  // null when none
  // Writes a state record (null: removes it); with an action, also an audit record whose "after" is audit_after.
  bool save_acme_state(const std::string& name, const json& state, const std::string& action = "",
                       const json& audit_after = nullptr);
  json acme_account(const std::string& id);  // null when none
  bool save_acme_account(const std::string& id, const json& rec);
  uint64_t generation();
  // OCSP stapling: keeps a checked response with the certificate whose serial is `serial` (false: it changed).
  bool set_cert_ocsp(const std::string& name, const std::string& serial, const std::string& der, int64_t this_update,
                     int64_t next_update);
  // In a fleet (fleet/fleet.h): what /v1/status reports of it, and every host's status (/v1/fleet).
  void set_fleet(std::function<json()> status, std::function<json()> hosts) {
    fleet_status_ = std::move(status);
    fleet_hosts_ = std::move(hosts);
  }
  Result fleet();
  // This host in its fleet (what /v1/status says of it); null on a pxadmind that runs on its own.
  json fleet_self() const { return fleet_status_ ? fleet_status_() : json(); }
  // Routes or streams ("route", "stream") as listed, each with "errors": [{"host"?, "pxd"?, "error"}] where a
  // running pxd does not fully serve it: a stream's port taken by another process, a peer that does not resolve,
  // a host another route holds. Stored and enabled is not serving. This host's pxds are read from their status
  // files; in a fleet (etcd reachable) the other hosts' from what they last published, named by "host".
  void add_errors(const std::string& kind, json* objects, const std::vector<std::string>& pxd_status_files);
  // Whether DNS-01 is available (pxadmind --dns-hook): "tls": "auto" on a wildcard host needs it.
  void set_dns_hook(bool configured) { dns_hook_ = configured; }

  // ACME HTTP-01 challenge records (acme:chal:<token>) the acme filter answers.
  Result put_challenge(const std::string& token, const json& body, const std::string& who);
  Result remove_challenge(const std::string& token, const std::string& who);

  // pxctl cache purge: {"route", "path"} or {"route", "all": true}; audited (cache.purge), 202.
  Result cache_purge(const json& body, const std::string& who);

 private:
  store::Store& st_;
  bool dns_hook_ = false;
  std::function<json()> fleet_status_, fleet_hosts_;
};

// The certificate name "tls": "auto" uses for a route's hosts: the first host
// ("*.example.com" → "wildcard.example.com"), or "route-<name>" when that is no valid name.
std::string auto_cert_name(const std::string& route_name, const std::string& first_host);

// Lower-case hex SHA-256 (token and session hashes, asset ETags).
std::string sha256_hex(std::string_view s);

// Validates and normalises an access list; errors are "field: problem".
bool parse_acl_json(const json& j, json* out, std::string* error);

}  // namespace px::admin
