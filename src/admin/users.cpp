// The web dashboard's accounts (user:<name>): created by an admin (or the first-run setup), checked at
// login by admin/ui_auth.cpp. Passwords are stored as crypt(5) hashes, never returned.
#include <openssl/sha.h>

#include "admin/txn.h"
#include "route/route.h"

namespace px::admin {

namespace {
json public_view(json rec) {
  rec.erase("password");
  rec.erase("recovery");
  bool totp = rec.contains("totp");
  rec.erase("totp");
  rec["totp"] = totp;
  return rec;
}
}  // namespace

Result Admin::list_accounts() {
  Result r;
  r.body = json::array();
  std::string err;
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
            store::keys::kUser,
            [&](std::string_view, std::string_view v) {
              r.body.push_back(public_view(json::parse(v, nullptr, false)));
              return true;
            },
            e);
      },
      &err);
  if (!ok) return Result::error(500, "", err);
  return r;
}

json Admin::account(const std::string& name) {
  std::string v, err;
  bool found = false;
  if (!route::valid_route_name(name) || !st_.get(store::keys::user(name), &v, &found, &err) || !found) return nullptr;
  json j = json::parse(v, nullptr, false);
  return j.is_object() ? j : json();
}

bool Admin::any_account() {
  bool any = false;
  std::string err;
  st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
            store::keys::kUser,
            [&](std::string_view, std::string_view) {
              any = true;
              return false;
            },
            e);
      },
      &err);
  return any;
}

Result Admin::create_account(const json& body, const std::string& who) {
  if (!body.is_object()) return Result::error(422, "", "expected {\"name\", \"password\", \"role\"}");
  for (auto it = body.begin(); it != body.end(); ++it)
    if (it.key() != "name" && it.key() != "password" && it.key() != "role")
      return Result::error(422, it.key(), "unknown field");
  std::string name = body.value("name", json()).is_string() ? body["name"].get<std::string>() : "";
  if (!route::valid_route_name(name))
    return Result::error(422, "name", "required: 1 to 64 characters of letters, digits, '.', '_', '-'");
  if (!body.contains("password") || !body["password"].is_string())
    return Result::error(422, "password", "required, a string");
  std::string password = body["password"].get<std::string>();
  if (password.size() < 10) return Result::error(422, "password", "at least 10 characters");
  if (password.size() > 1024) return Result::error(422, "password", "at most 1024 characters");
  std::string role = body.value("role", json("viewer")).is_string() ? body.value("role", "viewer") : "";
  if (role != "admin" && role != "viewer") return Result::error(422, "role", "admin or viewer");
  std::string hash, herr;
  if (!hash_password(password, &hash, &herr)) return Result::error(500, "", herr);
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::user(name), &old, &found)) return false;
    if (found) return tx.fail(Result::error(409, "name", "user '" + name + "' already exists", {{"conflict", name}}));
    json rec = {{"name", name}, {"role", role}, {"password", hash}, {"created", now_rfc3339()}, {"created_by", who}};
    if (!tx.w.put(store::keys::user(name), rec.dump(), tx.err)) return false;
    if (!tx.audit(who, "user.create", "user/" + name, nullptr, public_view(rec))) return false;
    tx.res.status = 201;
    tx.res.body = public_view(rec);
    return true;
  });
}

Result Admin::remove_account(const std::string& name, const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::user(name), &old, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no user named '" + name + "'"));
    if (!tx.w.del(store::keys::user(name), tx.err)) return false;
    if (!tx.audit(who, "user.delete", "user/" + name, public_view(old), nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

Result Admin::set_account_totp(const std::string& name, const std::string& secret, const json& recovery,
                               const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    json rec;
    bool found;
    if (!tx.load(store::keys::user(name), &rec, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no user named '" + name + "'"));
    bool enabling = !secret.empty() && !rec.contains("totp");
    if (!secret.empty()) rec["totp"] = secret;
    rec["recovery"] = recovery;
    if (!tx.w.put(store::keys::user(name), rec.dump(), tx.err)) return false;
    if (enabling && !tx.audit(who, "user.totp", "user/" + name, nullptr, public_view(rec))) return false;
    tx.res.status = 200;
    tx.res.body = public_view(rec);
    return true;
  });
}

}  // namespace px::admin
