// px::acme::Client — the ACME protocol (RFC 8555) against one CA directory:
// the directory, nonces (with badNonce retries), the account, and one order at
// a time from newOrder to the downloaded certificate chain; renewal
// information (RFC 9773). It knows nothing of the store: the caller publishes
// challenge answers (Hooks) and keeps what comes back.
//
// Failures come back as a problem document (RFC 7807) the operator can read:
// the CA's own, with each failed authorization's validation error under
// "authorizations", or one of px's for what never reached the CA:
//   {"type": "px:network", "detail": "connect to 127.0.0.1:14000: connection refused"}
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "acme/jose.h"
#include "http/client.h"

namespace px::acme {

// The ACME client speaks through px's HTTP/1 client (http/client.h).
// A request to the CA (or an OCSP responder), as px's ACME client: "px-acme/VERSION".
http::ClientRequest ca_request(std::string method, std::string url, std::string content_type = "",
                               std::string body = "");

using json = nlohmann::json;
using Done = std::function<void(std::string error)>;  // "" = done

// Runs fn once, ms from now, on the loop.
void after(uv_loop_t* loop, uint64_t ms, std::function<void()> fn);
// Drops every pending after() (at shutdown: their functions never run).
void cancel_afters();

struct Hooks {
  // HTTP-01: make /.well-known/acme-challenge/<token> answer `key_auth` (and take it back).
  std::function<void(const std::string& token, const std::string& key_auth, Done)> http01_put;
  std::function<void(const std::string& token)> http01_remove;
  // DNS-01: add (or remove) the TXT record `value` at `fqdn`; done once resolvers see it.
  // Empty when no DNS hook is configured.
  std::function<void(bool add, const std::string& fqdn, const std::string& value, Done)> dns01;
  bool prefer_dns = false;  // DNS-01 even where HTTP-01 would do
};

struct Outcome {
  bool ok = false;
  std::string chain_pem, key_pem;  // on success: the certificate chain (leaf first) and its new key
  json problem;                    // on failure
  int64_t retry_after = 0;         // seconds the CA asked us to wait (0 = not said)
};

struct RenewalWindow {
  bool ok = false;
  int64_t start = 0, end = 0;  // unix seconds
  int64_t retry_after = 0;     // when to ask again (seconds)
  std::string error;
};

class Client {
 public:
  Client(http::Client& http, uv_loop_t* loop) : http_(http), loop_(loop) {}
  void configure(std::string directory_url, std::string email);
  // The account key (PEM) and, once registered, its URL. on_account is told a newly registered URL.
  void set_account(std::string key_pem, std::string kid);
  std::function<void(const std::string& kid)> on_account;
  const std::string& directory_url() const { return dir_url_; }
  bool busy() const { return busy_; }

  // Orders a certificate for `names` (replaces: the RFC 9773 id of the one it renews, or "").
  void issue(std::vector<std::string> names, std::string replaces, Hooks* hooks, std::function<void(Outcome)> done);
  // Whether the directory offers renewal information (fetches the directory first).
  void renewal_info(const std::string& cert_id, std::function<void(RenewalWindow)> done);

  // Polling of pending authorizations and orders: first interval, then doubling to max (ms).
  uint64_t poll_first_ms = 500, poll_max_ms = 5000, poll_limit_ms = 300000;

  struct Order;

 private:
  friend struct Order;
  using Reply = std::function<void(http::ClientResponse&, json& body)>;
  void with_directory(std::function<void(std::string error)> then);
  void with_nonce(std::function<void(std::string error)> then);
  void with_account(std::function<void(json problem)> then);
  // A signed POST (payload "" = POST-as-GET), retried on badNonce.
  void post(const std::string& url, const std::string& payload, bool use_jwk, Reply reply, int attempt = 0);
  void after(uint64_t ms, std::function<void()> fn) { acme::after(loop_, ms, std::move(fn)); }

  http::Client& http_;
  uv_loop_t* loop_;
  std::string dir_url_, email_;
  json dir_;  // the directory, once fetched
  std::string nonce_;
  AccountKey key_;
  std::string key_pem_, kid_;
  bool busy_ = false;
};

// A problem document for what never reached the CA.
json local_problem(const std::string& type, const std::string& detail);
// One line for logs: "urn:...:rateLimited: too many orders (example.com: urn:...:connection: ...)".
std::string problem_summary(const json& problem);

}  // namespace px::acme
