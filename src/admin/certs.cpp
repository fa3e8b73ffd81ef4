// pxadmind's certificates and ACME state: uploads (checked), the list the
// operator reads (with each managed certificate's last attempt, last error and
// next attempt), challenge records for pxd's acme filter, and the records the
// ACME manager (admin/acme_manager.h) keeps between attempts.
#include <algorithm>
#include <ctime>

#include <openssl/base64.h>

#include "admin/model.h"
#include "admin/txn.h"
#include "route/route.h"
#include "tls/cert.h"

namespace px::admin {

// ---- ACME challenges ----

static bool valid_token(const std::string& t) {
  if (t.empty() || t.size() > 256) return false;
  for (char c : t)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

Result Admin::put_challenge(const std::string& token, const json& body, const std::string& who) {
  if (!valid_token(token)) return Result::error(422, "token", "1 to 256 characters of the base64url alphabet");
  if (!body.is_object() || !body.contains("key_authorization") || !body["key_authorization"].is_string())
    return Result::error(422, "key_authorization", "required, a string");
  std::string ka = body["key_authorization"].get<std::string>();
  if (ka.empty() || ka.size() > 1024) return Result::error(422, "key_authorization", "1 to 1024 characters");
  for (unsigned char c : ka)
    if (c <= 0x20 || c >= 0x7f) return Result::error(422, "key_authorization", "printable ASCII only");
  return in_txn(st_, [&](Tx& tx) {
    if (!tx.w.put(store::keys::challenge(token), ka, tx.err)) return false;
    if (!tx.audit(who, "acme.challenge.put", "acme/" + token, nullptr, nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

Result Admin::remove_challenge(const std::string& token, const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    std::string v;
    bool found;
    if (!tx.w.get(store::keys::challenge(token), &v, &found, tx.err)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no challenge for token '" + token + "'"));
    if (!tx.w.del(store::keys::challenge(token), tx.err)) return false;
    if (!tx.audit(who, "acme.challenge.delete", "acme/" + token, nullptr, nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

// ---- certificates ----

namespace {
// What the API shows of a stored certificate: everything but the key.
json cert_view(const json& rec, bool with_pem) {
  json v = json::object();
  for (const char* k : {"name", "source", "names", "issuer", "serial", "key_type", "not_before", "not_after",
                        "last_attempt", "last_error", "next_attempt", "ocsp_this_update", "ocsp_next_update"})
    if (rec.contains(k)) v[k] = rec[k];
  int64_t after = rec.value("not_after", int64_t(0));
  v["not_after_text"] = tls::format_time(after);
  v["days_left"] = (after - static_cast<int64_t>(time(nullptr))) / 86400;
  if (with_pem && rec.contains("cert")) v["cert"] = rec["cert"];
  return v;
}
}  // namespace

// Merges what the ACME manager knows (acme:state:<name>) into a certificate's view.
static json with_state(json view, const json& state) {
  if (!state.is_object()) return view;
  view["managed"] = "acme";
  for (const char* k :
       {"status", "forced", "reason", "last_attempt", "last_error", "next_attempt", "failures", "renewal_window"})
    if (state.contains(k) && !state[k].is_null()) view[k] = state[k];
  if (!view.contains("names")) view["names"] = state.value("names", json::array());
  if (!view.contains("source")) view["source"] = "acme";
  return view;
}

Result Admin::list_certs() {
  Result r;
  r.body = json::array();
  std::string err;
  std::map<std::string, json> states;
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        return t.scan(
                   store::keys::kAcmeState,
                   [&](std::string_view k, std::string_view v) {
                     states[std::string(k.substr(store::keys::kAcmeState.size()))] = json::parse(v, nullptr, false);
                     return true;
                   },
                   e) &&
               t.scan(
                   store::keys::kCert,
                   [&](std::string_view k, std::string_view v) {
                     json rec = json::parse(v, nullptr, false);
                     std::string name(k.substr(store::keys::kCert.size()));
                     if (!rec.is_object()) return true;
                     auto it = states.find(name);
                     r.body.push_back(with_state(cert_view(rec, false), it == states.end() ? json() : it->second));
                     if (it != states.end()) states.erase(it);
                     return true;
                   },
                   e);
      },
      &err);
  if (!ok) return Result::error(500, "", err);
  // Certificates ACME is still getting: no certificate yet, only the state.
  for (const auto& [name, st] : states) {
    json v = {{"name", name}, {"source", "acme"}, {"names", st.value("names", json::array())}};
    r.body.push_back(with_state(v, st));
  }
  std::sort(r.body.begin(), r.body.end(), [](const json& a, const json& b) {
    return a.value("name", std::string()) < b.value("name", std::string());
  });
  return r;
}

Result Admin::get_cert(const std::string& name) {
  Result r;
  std::string v, err;
  bool found = false;
  bool ok = st_.read(
      [&](store::Store::Txn& t, std::string* e) { return t.get(store::keys::cert(name), &v, &found, e); }, &err);
  if (!ok) return Result::error(500, "", err);
  if (!found) {
    json st = acme_state(name);
    if (!st.is_object()) return Result::error(404, "", "no certificate named '" + name + "'");
    r.body = with_state({{"name", name}}, st);
    return r;
  }
  r.body = with_state(cert_view(json::parse(v, nullptr, false), true), acme_state(name));
  return r;
}

Result Admin::put_cert(const std::string& name, const json& body, const std::string& who) {
  if (!route::valid_route_name(name)) return Result::error(422, "name", "1 to 64 of A-Z a-z 0-9 . _ -");
  if (!body.is_object()) return Result::error(422, "", "expected a JSON object with cert and key");
  for (const char* f : {"cert", "key"})
    if (!body.contains(f) || !body[f].is_string()) return Result::error(422, f, "required, a PEM string");
  std::string cert_pem = body["cert"].get<std::string>(), key_pem = body["key"].get<std::string>();
  tls::Cert c;
  c.name = name;
  std::string err;
  if (!tls::parse_cert(cert_pem, key_pem, static_cast<int64_t>(time(nullptr)), &c, &err)) {
    size_t colon = err.find(": ");
    return Result::error(422, colon == std::string::npos ? "" : err.substr(0, colon),
                         colon == std::string::npos ? err : err.substr(colon + 2));
  }
  std::string rec = tls::cert_record(c, cert_pem, key_pem, body.value("source", std::string("custom")));
  json view = cert_view(json::parse(rec), false);
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::cert(name), &old, &found)) return false;
    if (!tx.w.put(store::keys::cert(name), rec, tx.err)) return false;
    if (!tx.audit(who, found ? "cert.update" : "cert.create", "cert/" + name,
                  found ? cert_view(old, false) : json(nullptr), view))
      return false;
    tx.res.status = found ? 200 : 201;
    tx.res.body = view;
    return true;
  });
}

Result Admin::remove_cert(const std::string& name, const std::string& who) {
  return in_txn(st_, [&](Tx& tx) {
    json old;
    bool found;
    if (!tx.load(store::keys::cert(name), &old, &found)) return false;
    if (!found) return tx.fail(Result::error(404, "", "no certificate named '" + name + "'"));
    std::string user;
    if (!tx.w.scan(
            store::keys::kRoute,
            [&](std::string_view, std::string_view v) {
              json rt = json::parse(v, nullptr, false);
              if (rt.is_object() && rt.value("tls", std::string()) == name) user = rt.value("name", std::string());
              return user.empty();
            },
            tx.err))
      return false;
    if (!user.empty())
      return tx.fail(Result::error(409, "", "certificate '" + name + "' is used by route " + user + " (tls)",
                                   {{"conflict", user}}));
    if (!tx.w.del(store::keys::cert(name), tx.err)) return false;
    if (!tx.audit(who, "cert.delete", "cert/" + name, cert_view(old, false), nullptr)) return false;
    tx.res.status = 204;
    tx.res.body = nullptr;
    return true;
  });
}

// ---- ACME bookkeeping ----

std::string auto_cert_name(const std::string& route_name, const std::string& first_host) {
  std::string n = first_host.rfind("*.", 0) == 0 ? "wildcard" + first_host.substr(1) : first_host;
  if (route::valid_route_name(n)) return n;
  return "route-" + route_name.substr(0, 58);
}

std::map<std::string, std::vector<std::string>> Admin::acme_wanted() {
  std::map<std::string, std::vector<std::string>> out;
  std::string err;
  st_.read(
      [&](store::Store::Txn& t, std::string* e) {
        // Routes and TLS streams with "tls": "auto" (the same two fields in both).
        auto want = [&](std::string_view, std::string_view v) {
          json rt = json::parse(v, nullptr, false);
          if (!rt.is_object() || rt.value("tls", std::string()) != "auto" || !rt.value("enabled", true) ||
              !rt.contains("hosts") || !rt["hosts"].is_array() || rt["hosts"].empty())
            return true;
          auto& names = out[auto_cert_name(rt.value("name", std::string()), rt["hosts"][0].get<std::string>())];
          for (const auto& h : rt["hosts"])
            if (std::find(names.begin(), names.end(), h.get<std::string>()) == names.end())
              names.push_back(h.get<std::string>());
          return true;
        };
        return t.scan(store::keys::kRoute, want, e) && t.scan(store::keys::kStream, want, e);
      },
      &err);
  return out;
}

namespace {
json read_json(store::Store& st, const std::string& key) {
  std::string v, err;
  bool found = false;
  if (!st.get(key, &v, &found, &err) || !found) return nullptr;
  json j = json::parse(v, nullptr, false);
  return j.is_discarded() ? json() : j;
}
}  // namespace

json Admin::acme_state(const std::string& name) { return read_json(st_, store::keys::acme_state(name)); }
json Admin::acme_account(const std::string& id) { return read_json(st_, store::keys::acme_account(id)); }

bool Admin::save_acme_state(const std::string& name, const json& state, const std::string& action,
                            const json& audit_after) {
  Result r = in_txn(st_, [&](Tx& tx) {
    if (state.is_null()) {
      if (!tx.w.del(store::keys::acme_state(name), tx.err)) return false;
    } else if (!tx.w.put(store::keys::acme_state(name), state.dump(), tx.err)) {
      return false;
    }
    return action.empty() || tx.audit("acme", action, "cert/" + name, nullptr, audit_after);
  });
  return r.status < 300;
}

bool Admin::save_acme_account(const std::string& id, const json& rec) {
  Result r = in_txn(st_, [&](Tx& tx) { return tx.w.put(store::keys::acme_account(id), rec.dump(), tx.err); });
  return r.status < 300;
}

bool Admin::set_cert_ocsp(const std::string& name, const std::string& serial, const std::string& der,
                          int64_t this_update, int64_t next_update) {
  size_t n = 0;
  EVP_EncodedLength(&n, der.size());
  std::string b64(n, '\0');
  b64.resize(EVP_EncodeBlock(reinterpret_cast<uint8_t*>(b64.data()), reinterpret_cast<const uint8_t*>(der.data()),
                             der.size()));
  Result r = in_txn(st_, [&](Tx& tx) {
    json rec;
    bool found;
    if (!tx.load(store::keys::cert(name), &rec, &found)) return false;
    if (!found || !rec.is_object() || rec.value("serial", std::string()) != serial)
      return tx.fail(Result::error(409, "", "the certificate changed"));
    rec["ocsp"] = b64;
    rec["ocsp_this_update"] = this_update;
    rec["ocsp_next_update"] = next_update;
    return tx.w.put(store::keys::cert(name), rec.dump(), tx.err);
  });
  return r.status < 300;
}

uint64_t Admin::generation() {
  uint64_t g = 0;
  std::string err;
  st_.generation(&g, &err);
  return g;
}

Result Admin::renew_cert(const std::string& name, const std::string& who) {
  auto wanted = acme_wanted();
  if (!wanted.count(name)) {
    json c = read_json(st_, store::keys::cert(name));
    return Result::error(c.is_object() ? 409 : 404, "",
                         c.is_object() ? "certificate '" + name +
                                             "' is not kept by ACME (no route or stream has \"tls\": \"auto\" for it); "
                                             "replace it with pxctl cert add"
                                       : "no certificate named '" + name + "'");
  }
  return in_txn(st_, [&](Tx& tx) {
    json st;
    bool found;
    if (!tx.load(store::keys::acme_state(name), &st, &found)) return false;
    if (!found || !st.is_object()) st = {{"name", name}, {"names", wanted[name]}, {"status", "pending"}};
    st["forced"] = true;
    if (!tx.w.put(store::keys::acme_state(name), st.dump(), tx.err)) return false;
    if (!tx.audit(who, "cert.renew", "cert/" + name, nullptr, nullptr)) return false;
    tx.res.status = 202;
    tx.res.body = with_state({{"name", name}}, st);
    return true;
  });
}

}  // namespace px::admin
