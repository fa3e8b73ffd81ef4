// pxctl trace, pxadmind's side (proxy/trace.h draws the whole path): tokens
// signed with each running pxd's trace key, and the records pxd wrote.
#include <openssl/rand.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "admin/model.h"
#include "core/log.h"
#include "core/strings.h"
#include "proxy/trace.h"

namespace px::admin {

Result create_trace(const std::vector<std::string>& status_files, const std::string& who) {
  uint8_t raw[16];
  RAND_bytes(raw, sizeof raw);
  std::string id = to_hex(raw, sizeof raw);
  int64_t expires = time(nullptr) + 60;
  std::string token, err;
  for (const auto& f : status_files) {
    json s = pxd_status(f);
    if (!s["running"].get<bool>()) continue;
    proxy::TraceKey key;
    if (!proxy::trace_key_file(f + ".trace-key", false, &key, &err)) continue;
    token += (token.empty() ? "" : ",") + proxy::trace_token(key, id, expires);
  }
  if (token.empty())
    return Result::error(409, "", "no running pxd to trace through" + (err.empty() ? std::string() : ": " + err));
  PX_INFO("%s: trace %s issued", who.c_str(), id.c_str());
  Result r;
  r.status = 201;
  r.body = {{"id", id}, {"header", "X-Px-Trace"}, {"token", token}, {"expires", expires}};
  return r;
}

Result take_trace(const std::vector<std::string>& status_files, const std::string& id) {
  bool ok = !id.empty() && id.size() <= 32;
  for (char c : id) ok = ok && isxdigit(static_cast<unsigned char>(c));
  if (!ok) return Result::error(400, "id", "expected the hexadecimal id POST /v1/traces gave");
  for (const auto& f : status_files) {
    std::string path = f + ".traces/" + id + ".json";
    std::ifstream in(path);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    ::unlink(path.c_str());
    Result r;
    r.body = json::parse(ss.str(), nullptr, false);
    if (r.body.is_discarded()) return Result::error(500, "", path + ": not JSON");
    return r;
  }
  return Result::error(404, "id", "no record for trace " + id + " (yet: pxd writes it when the request ends)");
}

}  // namespace px::admin
