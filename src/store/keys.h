// px::store::keys — the store's key space. Start here: every key px reads or
// writes is named or built in this header, and nowhere else (pxd, pxadmind,
// px-store and the tests use it). Mirrored in pxd.conf(5), THE STORE.
//
// One unnamed LMDB database, schema version 1. Keys are ASCII; names are
// [A-Za-z0-9._-]{1,64}.
//
//   key                        value
//   meta:schema                ASCII decimal schema version, "1"
//   meta:generation            8 bytes, unsigned 64-bit little-endian, +1 per write transaction
//   meta:audit_seq             ASCII decimal, the last audit record's seq
//   meta:fleet_revision        ASCII decimal: in a fleet (pxadmind --etcd), the etcd revision this store has
//                              applied. Local, like meta:generation and meta:schema; every other key is the
//                              fleet's, kept in etcd under /px/<fleet>/<key> (fleet_shared()).
//   route:<name>               JSON route (route/route.h)
//   acl:<name>                 JSON access list (route/acl.h): CIDR rules, users with password hashes
//   token:<name>               JSON {name, sha256, created, created_by}: API tokens, as hashes only
//   audit:<20-digit seq>       JSON {seq, time, credential, action, resource, before, after}
//   index:hp:<host> <path>     route name: which route serves a host and path prefix (conflict checks)
//   acme:chal:<token>          the key authorization answered at /.well-known/acme-challenge/<token>
//   cert:<name>                JSON {name, cert (PEM chain, leaf first), key (PEM private key), source
//                              ("custom" or "acme"), names, issuer, not_after, ...}: what TLS listeners serve.
//                              The key never leaves pxadmind's API, logs or exports (unless --include-keys).
//   acme:account:<id>          JSON {directory, key (PEM), kid, email, created}: pxadmind's ACME account at one
//                              CA; id = the first 16 hex digits of sha256(directory URL). Never exported.
//   acme:state:<cert name>     JSON {name, names, status, forced, last_attempt, last_error (the problem
//                              document), next_attempt, failures, orders[], failed[], issued[], ari{...}}:
//                              what pxadmind's ACME manager knows of a certificate it keeps (tls auto).
//   stream:<name>              JSON L4 stream (route/stream.h)
//   cache:purge:<route>        JSON {"purges": [{"pattern": "/products/*", "at": unix time in ms}]}: pxctl cache
//                              purge. pxd treats a stored response of the route from at or before `at` whose
//                              target matches the pattern ('*' any run of characters) as absent, and drops it.
//   user:<name>                JSON {name, role ("admin" or "viewer"), password (a crypt(5) hash), created,
//                              created_by, totp (base32 secret, once enabled), recovery [sha256 of unused
//                              codes]}: the web dashboard's accounts (admin/ui_auth.h). Never exported.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace px::store::keys {

inline constexpr uint32_t kSchemaVersion = 1;

inline constexpr std::string_view kSchema = "meta:schema";
inline constexpr std::string_view kGeneration = "meta:generation";
inline constexpr std::string_view kAuditSeq = "meta:audit_seq";
inline constexpr std::string_view kFleetRevision = "meta:fleet_revision";

// Whether a key is the fleet's (mirrored through etcd) rather than this host's own.
inline bool fleet_shared(std::string_view key) { return !key.starts_with("meta:") || key == kAuditSeq; }

inline constexpr std::string_view kRoute = "route:";
inline constexpr std::string_view kAcl = "acl:";
inline constexpr std::string_view kStream = "stream:";
inline constexpr std::string_view kToken = "token:";
inline constexpr std::string_view kUser = "user:";
inline constexpr std::string_view kAudit = "audit:";
inline constexpr std::string_view kHostPathIndex = "index:hp:";
inline constexpr std::string_view kChallenge = "acme:chal:";
inline constexpr std::string_view kCert = "cert:";
inline constexpr std::string_view kAcmeAccount = "acme:account:";
inline constexpr std::string_view kAcmeState = "acme:state:";
inline constexpr std::string_view kCachePurge = "cache:purge:";

inline std::string join(std::string_view prefix, std::string_view name) {
  std::string k;
  k.reserve(prefix.size() + name.size());
  k.append(prefix);
  k.append(name);
  return k;
}
inline std::string route(std::string_view name) { return join(kRoute, name); }
inline std::string acl(std::string_view name) { return join(kAcl, name); }
inline std::string token(std::string_view name) { return join(kToken, name); }
inline std::string user(std::string_view name) { return join(kUser, name); }
inline std::string challenge(std::string_view token) { return join(kChallenge, token); }
inline std::string cert(std::string_view name) { return join(kCert, name); }
inline std::string acme_account(std::string_view id) { return join(kAcmeAccount, id); }
inline std::string acme_state(std::string_view cert_name) { return join(kAcmeState, cert_name); }
inline std::string cache_purge(std::string_view route) { return join(kCachePurge, route); }
// "route" or "acl" (pxadmind's generic resources) and a name.
inline std::string resource(std::string_view kind, std::string_view name) {
  std::string k = join(kind, ":");
  k.append(name);
  return k;
}
inline std::string resource_prefix(std::string_view kind) { return join(kind, ":"); }
inline std::string host_path(std::string_view host, std::string_view path) {
  std::string k = join(kHostPathIndex, host);
  k.push_back(' ');
  k.append(path);
  return k;
}
// Audit keys sort by seq: zero-padded to 20 digits.
inline std::string audit(uint64_t seq) {
  char b[32];
  std::snprintf(b, sizeof b, "audit:%020llu", static_cast<unsigned long long>(seq));
  return b;
}

// The generation value: 8 bytes, little-endian. Anything else reads as 0.
inline uint64_t decode_generation(std::string_view v) {
  uint64_t g = 0;
  if (v.size() == 8)
    for (int i = 7; i >= 0; i--) g = (g << 8) | static_cast<uint8_t>(v[static_cast<size_t>(i)]);
  return g;
}
inline std::string encode_generation(uint64_t g) {
  std::string v(8, '\0');
  for (int i = 0; i < 8; i++) v[static_cast<size_t>(i)] = static_cast<char>(g >> (8 * i));
  return v;
}

}  // namespace px::store::keys
