// The web dashboard's sessions (ui_auth.h says what they are and why).
#include "admin/ui_auth.h"

#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <sys/stat.h>

#include <ctime>

#include "core/log.h"
#include "core/strings.h"
#include "route/route.h"

namespace px::admin {

namespace {
std::string random_hex(size_t bytes) {
  uint8_t raw[32];
  RAND_bytes(raw, bytes);
  return to_hex(raw, bytes);
}

bool same(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result fail(int status, const std::string& field, const std::string& msg) { return Result::error(status, field, msg); }

// "123456": six digits, else -1.
int64_t six_digits(const json& v) {
  if (!v.is_string()) return -1;
  std::string s = v.get<std::string>();
  if (s.size() != 6) return -1;
  int64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}
}  // namespace

uint32_t totp_code(std::string_view key, uint64_t step) {
  uint8_t msg[8];
  for (int i = 7; i >= 0; i--, step >>= 8) msg[i] = static_cast<uint8_t>(step & 0xff);
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha1(), key.data(), key.size(), msg, sizeof msg, mac, &len);
  unsigned off = mac[len - 1] & 0x0f;
  uint32_t bin = (static_cast<uint32_t>(mac[off] & 0x7f) << 24) | (static_cast<uint32_t>(mac[off + 1]) << 16) |
                 (static_cast<uint32_t>(mac[off + 2]) << 8) | mac[off + 3];
  return bin % 1000000;
}

std::string base32_encode(std::string_view raw) {
  static const char* kAlpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (unsigned char c : raw) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlpha[(buf >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlpha[(buf << (5 - bits)) & 31]);
  return out;
}

std::string base32_decode(std::string_view text) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a';
    else if (c >= '2' && c <= '7')
      v = c - '2' + 26;
    else if (c == '=')
      break;
    else
      return "";
    buf = (buf << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<char>((buf >> (bits - 8)) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

std::string default_ui_dir() {
  struct stat st;
  std::string src = std::string(PX_SOURCE_ROOT) + "/ui";
  if (::stat((src + "/index.html").c_str(), &st) == 0) return src;
  return std::string(PX_DATADIR) + "/ui";
}

int64_t UiAuth::now() const { return static_cast<int64_t>(time(nullptr)); }

void UiAuth::start() {
  std::string err;
  hash_password(random_hex(16), &dummy_hash_, &err);  // checked for unknown accounts: the same cost
  if (admin_.any_account()) return;
  setup_token_ = "pxs_" + random_hex(16);
  PX_INFO("first run: no dashboard account exists; create the admin with the setup token %s (used once)",
          setup_token_.c_str());
}

bool UiAuth::limited(const std::string& key, int limit, int64_t* retry_after) {
  auto it = failures_.find(key);
  if (it == failures_.end()) return false;
  int64_t t = now();
  if (t - it->second.since >= o_.window_s) {
    failures_.erase(it);
    return false;
  }
  if (it->second.count < limit) return false;
  *retry_after = o_.window_s - (t - it->second.since);
  return true;
}

void UiAuth::failed(const std::string& key) {
  if (failures_.size() > 100000) failures_.clear();  // a flood of addresses: forget rather than grow
  auto& f = failures_[key];
  if (f.count == 0 || now() - f.since >= o_.window_s) f = Failures{0, now()};
  f.count++;
}

std::string UiAuth::open_session(const json& account) {
  std::string id = random_hex(32);
  UiSession s;
  s.user = account.value("name", "");
  s.role = account.value("role", "viewer");
  s.csrf = random_hex(16);
  s.created = s.last = now();
  if (sessions_.size() > 10000)  // expired ones first; the map stays small
    for (auto it = sessions_.begin(); it != sessions_.end();)
      it = now() - it->second.last > o_.idle_s ? sessions_.erase(it) : std::next(it);
  sessions_[sha256_hex(id)] = s;
  return id;
}

UiSession* UiAuth::find(const std::string& id) {
  if (id.empty()) return nullptr;
  auto it = sessions_.find(sha256_hex(id));
  if (it == sessions_.end()) return nullptr;
  int64_t t = now();
  if (t - it->second.last > o_.idle_s || t - it->second.created > o_.max_age_s) {
    sessions_.erase(it);
    return nullptr;
  }
  // The account may have been removed, or its role changed, since the login.
  json acct = admin_.account(it->second.user);
  if (acct.is_null()) {
    sessions_.erase(it);
    return nullptr;
  }
  it->second.role = acct.value("role", "viewer");
  it->second.last = t;
  return &it->second;
}

Result UiAuth::setup(const json& body, const std::string& ip, std::string* cookie) {
  int64_t retry;
  if (limited("ip:" + ip, o_.ip_failures, &retry))
    return fail(429, "", "too many failed attempts from " + ip + "; retry in " + std::to_string(retry) + " s");
  if (setup_token_.empty() || admin_.any_account())
    return fail(409, "", "the first account exists already: log in, or ask an admin for an account");
  if (!body.is_object() || !body.contains("token") || !body["token"].is_string() ||
      !same(body["token"].get<std::string>(), setup_token_)) {
    failed("ip:" + ip);
    return fail(403, "token", "not the setup token pxadmind logged");
  }
  json acct = {{"name", body.value("user", json())}, {"password", body.value("password", json())}, {"role", "admin"}};
  Result r = admin_.create_account(acct, "setup");
  if (r.status != 201) return r;
  setup_token_.clear();
  PX_INFO("first run: dashboard admin '%s' created; the setup token is spent", r.body.value("name", "").c_str());
  *cookie = open_session(r.body);
  return me(*cookie);
}

Result UiAuth::login(const json& body, const std::string& ip, std::string* cookie) {
  if (!body.is_object() || !body.contains("user") || !body["user"].is_string() || !body.contains("password") ||
      !body["password"].is_string())
    return fail(422, "", "expected {\"user\", \"password\"} (and \"totp\" once enabled)");
  std::string user = body["user"].get<std::string>();
  int64_t retry;
  if (limited("ip:" + ip, o_.ip_failures, &retry) ||
      (route::valid_route_name(user) && limited("user:" + user, o_.user_failures, &retry))) {
    Result r = fail(429, "", "too many failed logins; retry in " + std::to_string(retry) + " s");
    r.body["retry_after"] = retry;
    return r;
  }
  json acct = admin_.account(user);
  std::string hash = acct.is_object() ? acct.value("password", "") : "";
  // Unknown accounts cost a hash too, so that timing does not tell which names exist.
  bool ok = verify_password(body["password"].get<std::string>(), hash.empty() ? dummy_hash_ : hash) && !hash.empty();
  if (!ok) {
    failed("ip:" + ip);
    if (route::valid_route_name(user)) failed("user:" + user);
    return fail(401, "password", "wrong user or password");
  }
  if (acct.contains("totp")) {
    std::string key = base32_decode(acct.value("totp", ""));
    int64_t code = six_digits(body.value("totp", json()));
    bool good = false;
    if (code >= 0) {
      uint64_t step = static_cast<uint64_t>(now()) / 30;
      for (uint64_t s : {step - 1, step, step + 1}) good = good || totp_code(key, s) == static_cast<uint32_t>(code);
    } else if (body.contains("recovery") && body["recovery"].is_string()) {
      std::string h = sha256_hex(body["recovery"].get<std::string>());
      json left = json::array();
      for (const auto& r : acct.value("recovery", json::array())) {
        if (!good && r.is_string() && same(r.get<std::string>(), h))
          good = true;  // spent: not kept
        else
          left.push_back(r);
      }
      if (good) admin_.set_account_totp(user, "", left, "user:" + user);
    } else if (!body.contains("totp")) {
      return fail(401, "totp", "this account needs its TOTP code (or a recovery code)");
    }
    if (!good) {
      failed("ip:" + ip);
      failed("user:" + user);
      return fail(401, "totp", "wrong TOTP code");
    }
  }
  failures_.erase("user:" + user);
  *cookie = open_session(acct);
  return me(*cookie);
}

Result UiAuth::logout(const std::string& id) {
  sessions_.erase(sha256_hex(id));
  Result r;
  r.status = 204;
  r.body = nullptr;
  return r;
}

Result UiAuth::me(const std::string& id) {
  UiSession* s = find(id);
  if (!s) {
    Result r = fail(401, "", "not logged in");
    r.body["error"]["setup_required"] = !setup_token_.empty();
    return r;
  }
  json acct = admin_.account(s->user);
  Result r;
  r.body = {{"user", s->user}, {"role", s->role}, {"csrf", s->csrf}, {"totp", acct.contains("totp")}};
  return r;
}

Result UiAuth::totp_begin(const std::string& id) {
  UiSession* s = find(id);
  if (!s) return fail(401, "", "not logged in");
  uint8_t raw[20];
  RAND_bytes(raw, sizeof raw);
  s->totp_pending = base32_encode(std::string_view(reinterpret_cast<char*>(raw), sizeof raw));
  Result r;
  r.body = {{"secret", s->totp_pending},
            {"uri", "otpauth://totp/px:" + s->user + "?secret=" + s->totp_pending + "&issuer=px"}};
  return r;
}

Result UiAuth::totp_confirm(const std::string& id, const json& body) {
  UiSession* s = find(id);
  if (!s) return fail(401, "", "not logged in");
  if (s->totp_pending.empty()) return fail(409, "", "start with POST /v1/session/totp");
  int64_t code = six_digits(body.is_object() ? body.value("code", json()) : json());
  std::string key = base32_decode(s->totp_pending);
  uint64_t step = static_cast<uint64_t>(now()) / 30;
  bool good = false;
  for (uint64_t st : {step - 1, step, step + 1}) good = good || (code >= 0 && totp_code(key, st) == code);
  if (!good) return fail(422, "code", "wrong code: check the authenticator's clock and try the next one");
  json codes = json::array(), hashes = json::array();
  for (int i = 0; i < 8; i++) {
    std::string c = random_hex(5);
    codes.push_back(c);
    hashes.push_back(sha256_hex(c));
  }
  Result r = admin_.set_account_totp(s->user, s->totp_pending, hashes, "user:" + s->user);
  if (r.status != 200) return r;
  s->totp_pending.clear();
  r.body = {{"recovery_codes", codes}};
  return r;
}

}  // namespace px::admin
