// px::admin web dashboard sessions — how a browser authenticates pxadmind's API.
//
// There is no default password. While no account exists, pxadmind logs a
// one-time setup token; POST /v1/session/setup with it creates the first
// admin. A login (POST /v1/session) checks the password (and the TOTP code,
// RFC 6238, or a recovery code, once the account enabled TOTP) and answers a
// session cookie: HttpOnly, SameSite=Strict, Secure behind TLS. Sessions live in
// pxadmind's memory only (a restart logs everyone out), end after an idle time
// and a maximum age, and each carries a CSRF token that every state-changing
// request must send back in X-CSRF-Token. Failed logins are limited per client
// address and per account (429 with Retry-After).
//
// The cookie is one more way to authenticate the same JSON API pxctl uses
// (admin/server.cpp applies it); a viewer's session may only read.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "admin/model.h"

namespace px::admin {

struct UiSession {
  std::string user, role, csrf;
  std::string totp_pending;  // a TOTP secret being enrolled (base32), until confirmed
  int64_t created = 0, last = 0;
};

struct UiOptions {
  int64_t idle_s = 1800;          // a session unused this long ends
  int64_t max_age_s = 12 * 3600;  // ... and any session this old
  int user_failures = 5;          // failed logins per account within window_s, then 429
  int ip_failures = 20;           // ... per client address
  int64_t window_s = 900;
};

class UiAuth {
 public:
  UiAuth(Admin& admin, UiOptions o) : admin_(admin), o_(o) {}
  // Makes and logs the setup token when no account exists.
  void start();
  const std::string& setup_token() const { return setup_token_; }

  // The endpoints (api.cpp). `ip`: the client's address, for the limits. *cookie: a new session id.
  Result setup(const json& body, const std::string& ip, std::string* cookie);
  Result login(const json& body, const std::string& ip, std::string* cookie);
  Result logout(const std::string& id);
  Result me(const std::string& id);  // 200 {user, role, csrf, totp}; 401 {setup_required}
  Result totp_begin(const std::string& id);
  Result totp_confirm(const std::string& id, const json& body);

  // The live session a cookie names (its idle clock restarts), or nullptr.
  UiSession* find(const std::string& id);
  int64_t now() const;

 private:
  bool limited(const std::string& key, int limit, int64_t* retry_after);
  void failed(const std::string& key);
  std::string open_session(const json& account);
  Admin& admin_;
  UiOptions o_;
  std::string setup_token_;
  std::string dummy_hash_;
  std::unordered_map<std::string, UiSession> sessions_;  // by sha256(cookie id)
  struct Failures {
    int count = 0;
    int64_t since = 0;
  };
  std::unordered_map<std::string, Failures> failures_;  // "ip:..." and "user:..."
};

// Where the dashboard's files are: the checkout's ui/ when run from a build tree, else the installed copy.
std::string default_ui_dir();

// RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits) of a raw key at step `step`.
uint32_t totp_code(std::string_view key, uint64_t step);
// RFC 4648 base32 (no padding), and back ("" when malformed).
std::string base32_encode(std::string_view raw);
std::string base32_decode(std::string_view text);

}  // namespace px::admin
