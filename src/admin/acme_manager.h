// pxadmind's ACME manager: keeps a certificate for every route with
// "tls": "auto", from the configured CA, in-process (acme/client.h).
//
//   routes ("tls": "auto") ─┐
//   acme:state:<name> ──────┼─ tick (1 s, and on every store change) ─ one order at a time ─ cert:<name>
//   cert:<name> ────────────┘                                           (pxd serves it on its next handshake)
//
// When: no certificate yet, its names changed, a renewal was asked for
// (pxctl cert renew), or the renewal time came: inside the CA's suggested
// window (RFC 9773 renewal information) when the CA offers one, else at two
// thirds of the lifetime. Failures back off exponentially (jittered, or as the
// CA's Retry-After says), and the CA's published limits are never exceeded.
// Every attempt's outcome is in acme:state:<name> (pxctl cert list), the
// audit log and pxadmind's log; a failure leaves the serving certificate alone.
#pragma once
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "admin/model.h"

namespace px::admin {

struct AcmeOptions {
  std::string directory = "https://acme-v02.api.letsencrypt.org/directory";
  std::string email;          // the account's contact ("" = none)
  std::string ca_file;        // CAs to verify the directory's server against ("" = the system's)
  std::string dns_hook;       // DNS-01 hook command ("" = HTTP-01 only)
  std::string dns_resolver;   // where to look for TXT records ("" = /etc/resolv.conf's first)
  bool prefer_dns = false;    // DNS-01 for every name, not only wildcards
  uint64_t retry_min_s = 60;  // the first retry after a failure; doubles up to retry_max_s
  uint64_t retry_max_s = 86400;
  uint64_t dns_timeout_s = 300;               // how long a TXT record may take to become visible
  std::vector<std::string> pxd_status_files;  // HTTP-01: wait until these pxd processes serve the answer
  // Every order's end: issued, or failed with the problem document's type (metrics).
  std::function<void(bool issued, const std::string& problem_type)> on_order;
  // In a fleet (fleet/fleet.h): one host orders a certificate at a time. lock says whether this host may order
  // `name` now (false: another host holds it, and who, in *holder); unlock follows the order's end.
  std::function<bool(const std::string& name, std::string* holder)> lock;
  std::function<void(const std::string& name)> unlock;
  // In a fleet: whether every host applied what this one has and its pxd serves it (the CA's HTTP-01 request
  // may reach any of them).
  std::function<bool()> fleet_serves;
};

class AcmeManager {
 public:
  AcmeManager(uv_loop_t* loop, Admin& admin, AcmeOptions opt);
  ~AcmeManager();
  bool start(std::string* error);
  // Before the loop closes: stops the timer and abandons work in flight (the store keeps the state).
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The directory URL for a name: "letsencrypt" and "letsencrypt-staging" are known; anything else is a URL.
std::string acme_directory_url(const std::string& name_or_url);

}  // namespace px::admin
