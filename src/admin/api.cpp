#include "admin/api.h"

#include "admin/ui_auth.h"
#include "core/strings.h"

namespace px::admin {

std::vector<std::string> g_pxd_status_files;
UiAuth* g_ui = nullptr;

namespace {
Result no_ui() { return Result::error(404, "", "the dashboard is not enabled (pxadmind --ui ADDRESS:PORT)"); }

// A dashboard call that may make or end a session: the cookie goes with the answer ("-": cleared).
Result with_cookie(Result r, const std::string& id) {
  r.set_cookie = id;
  return r;
}
}  // namespace

static bool flag(const Request& r, const char* name) {
  auto it = r.query.find(name);
  return it != r.query.end() && (it->second == "1" || it->second == "true" || it->second.empty());
}

const std::vector<Operation>& operations() {
  static const std::vector<Operation> ops = [] {
    std::vector<Operation> v;
    for (std::string kind : {"route", "acl", "stream"}) {
      std::string list = "/v1/" + kind + "s";
      std::string one = list + "/{name}";
      v.push_back({"GET", list, [kind](Admin& a, Request&) {
                     Result r = a.list(kind);
                     if (kind != "acl" && r.status < 300) a.add_errors(kind, &r.body, g_pxd_status_files);
                     return r;
                   }});
      v.push_back({"POST", list, [kind](Admin& a, Request& r) { return a.create(kind, r.body, r.who); }});
      v.push_back({"GET", one, [kind](Admin& a, Request& r) {
                     Result res = a.get(kind, r.params["name"]);
                     if (kind != "acl" && res.status < 300) {
                       json one = json::array({res.body});
                       a.add_errors(kind, &one, g_pxd_status_files);
                       res.body = one[0];
                     }
                     return res;
                   }});
      v.push_back({"PUT", one,
                   [kind](Admin& a, Request& r) { return a.put(kind, r.params["name"], r.body, r.if_match, r.who); }});
      v.push_back({"PATCH", one, [kind](Admin& a, Request& r) {
                     return a.patch(kind, r.params["name"], r.body, r.if_match, r.who);
                   }});
      v.push_back({"DELETE", one,
                   [kind](Admin& a, Request& r) { return a.remove(kind, r.params["name"], r.if_match, r.who); }});
    }
    v.push_back({"GET", "/v1/routes/{name}/records",
                 [](Admin&, Request& r) { return route_records(g_pxd_status_files, r.params["name"]); }});
    v.push_back({"POST", "/v1/acls/{name}/users",
                 [](Admin& a, Request& r) { return a.add_user(r.params["name"], r.body, r.who); }});
    v.push_back({"DELETE", "/v1/acls/{name}/users/{username}",
                 [](Admin& a, Request& r) { return a.remove_user(r.params["name"], r.params["username"], r.who); }});
    v.push_back({"GET", "/v1/config", [](Admin& a, Request& r) { return a.export_config(flag(r, "include_keys")); }});
    v.push_back({"POST", "/v1/filters/{name}/check",
                 [](Admin& a, Request& r) { return a.check_filter(r.params["name"], r.body); }});
    v.push_back({"GET", "/v1/certs", [](Admin& a, Request&) { return a.list_certs(); }});
    v.push_back({"GET", "/v1/certs/{name}", [](Admin& a, Request& r) { return a.get_cert(r.params["name"]); }});
    v.push_back(
        {"PUT", "/v1/certs/{name}", [](Admin& a, Request& r) { return a.put_cert(r.params["name"], r.body, r.who); }});
    v.push_back(
        {"DELETE", "/v1/certs/{name}", [](Admin& a, Request& r) { return a.remove_cert(r.params["name"], r.who); }});
    v.push_back(
        {"POST", "/v1/certs/{name}/renew", [](Admin& a, Request& r) { return a.renew_cert(r.params["name"], r.who); }});
    v.push_back({"POST", "/v1/config", [](Admin& a, Request& r) {
                   auto it = r.query.find("mode");
                   std::string mode = it == r.query.end() ? "merge" : it->second;
                   if (mode != "merge" && mode != "replace")
                     return Result::error(400, "mode", "must be merge or replace");
                   return a.import_config(r.body, mode == "replace", flag(r, "dry_run"), r.who);
                 }});
    v.push_back({"GET", "/v1/audit", [](Admin& a, Request& r) {
                   AuditQuery q;
                   q.resource = r.query["resource"];
                   q.action = r.query["action"];
                   q.credential = r.query["credential"];
                   uint64_t n;
                   if (!r.query["since"].empty()) {
                     if (!parse_u64(r.query["since"], &n)) return Result::error(400, "since", "expected a number");
                     q.since = n;
                   }
                   if (!r.query["limit"].empty()) {
                     if (!parse_u64(r.query["limit"], &n) || n < 1 || n > 100000)
                       return Result::error(400, "limit", "expected 1..100000");
                     q.limit = n;
                   }
                   return a.audit(q);
                 }});
    v.push_back({"GET", "/v1/status", [](Admin& a, Request&) { return a.status(g_pxd_status_files); }});
    v.push_back({"GET", "/v1/fleet", [](Admin& a, Request&) { return a.fleet(); }});
    v.push_back({"GET", "/v1/traffic", [](Admin&, Request&) { return traffic(g_pxd_status_files); }});
    v.push_back({"POST", "/v1/cache/purge", [](Admin& a, Request& r) { return a.cache_purge(r.body, r.who); }});
    v.push_back({"GET", "/v1/cache/stats",
                 [](Admin&, Request& r) { return cache_stats(g_pxd_status_files, r.query["route"]); }});
    v.push_back({"GET", "/v1/users", [](Admin& a, Request&) { return a.list_accounts(); }});
    v.push_back({"POST", "/v1/users", [](Admin& a, Request& r) { return a.create_account(r.body, r.who); }});
    v.push_back(
        {"DELETE", "/v1/users/{name}", [](Admin& a, Request& r) { return a.remove_account(r.params["name"], r.who); }});
    v.push_back({"GET", "/v1/session", [](Admin&, Request& r) { return g_ui ? g_ui->me(r.session) : no_ui(); }});
    v.push_back({"POST", "/v1/session", [](Admin&, Request& r) {
                   if (!g_ui) return no_ui();
                   std::string id;
                   Result res = g_ui->login(r.body, r.ip, &id);
                   return id.empty() ? res : with_cookie(res, id);
                 }});
    v.push_back({"DELETE", "/v1/session",
                 [](Admin&, Request& r) { return g_ui ? with_cookie(g_ui->logout(r.session), "-") : no_ui(); }});
    v.push_back({"POST", "/v1/session/setup", [](Admin&, Request& r) {
                   if (!g_ui) return no_ui();
                   std::string id;
                   Result res = g_ui->setup(r.body, r.ip, &id);
                   return id.empty() ? res : with_cookie(res, id);
                 }});
    v.push_back(
        {"POST", "/v1/session/totp", [](Admin&, Request& r) { return g_ui ? g_ui->totp_begin(r.session) : no_ui(); }});
    v.push_back({"POST", "/v1/session/totp/confirm",
                 [](Admin&, Request& r) { return g_ui ? g_ui->totp_confirm(r.session, r.body) : no_ui(); }});
    v.push_back({"POST", "/v1/traces", [](Admin&, Request& r) { return create_trace(g_pxd_status_files, r.who); }});
    v.push_back(
        {"GET", "/v1/traces/{id}", [](Admin&, Request& r) { return take_trace(g_pxd_status_files, r.params["id"]); }});
    v.push_back({"GET", "/v1/tokens", [](Admin& a, Request&) { return a.list_tokens(); }});
    v.push_back({"POST", "/v1/tokens", [](Admin& a, Request& r) { return a.create_token(r.body, r.who); }});
    v.push_back(
        {"DELETE", "/v1/tokens/{name}", [](Admin& a, Request& r) { return a.remove_token(r.params["name"], r.who); }});
    v.push_back({"PUT", "/v1/acme/challenges/{token}",
                 [](Admin& a, Request& r) { return a.put_challenge(r.params["token"], r.body, r.who); }});
    v.push_back({"DELETE", "/v1/acme/challenges/{token}",
                 [](Admin& a, Request& r) { return a.remove_challenge(r.params["token"], r.who); }});
    v.push_back({"GET", "/v1/openapi.json", [](Admin&, Request&) {
                   Result res;
                   res.body = json::parse(openapi_document());
                   return res;
                 }});
    return v;
  }();
  return ops;
}

static std::string pct_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '%' && i + 2 < s.size() && isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

const Operation* match(const std::string& method, const std::string& target, Request* req, int* status) {
  std::string_view t = target;
  size_t q = t.find('?');
  std::string_view path = t.substr(0, q);
  if (q != std::string_view::npos) {
    std::string_view qs = t.substr(q + 1);
    while (!qs.empty()) {
      size_t amp = qs.find('&');
      std::string_view kv = qs.substr(0, amp);
      size_t eq = kv.find('=');
      req->query[pct_decode(kv.substr(0, eq))] = eq == std::string_view::npos ? "" : pct_decode(kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      qs.remove_prefix(amp + 1);
    }
  }
  std::vector<std::string> segs = path_segments(path);
  for (auto& s : segs) s = pct_decode(s);
  bool path_matched = false;
  for (const auto& op : operations()) {
    std::vector<std::string> pat = path_segments(op.pattern);
    if (pat.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    bool ok = true;
    for (size_t i = 0; i < pat.size() && ok; i++) {
      if (pat[i].front() == '{')
        params[pat[i].substr(1, pat[i].size() - 2)] = segs[i];
      else
        ok = pat[i] == segs[i];
    }
    if (!ok) continue;
    path_matched = true;
    if (method != op.method) continue;
    req->params = std::move(params);
    return &op;
  }
  *status = path_matched ? 405 : 404;
  return nullptr;
}

}  // namespace px::admin
