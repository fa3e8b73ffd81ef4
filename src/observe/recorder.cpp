#include "observe/recorder.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/shared_table.h"
#include "core/strings.h"
#include "route/snapshot.h"
#include "stream/stream.h"

namespace px::proxy {

using json = nlohmann::json;

namespace {
bool masked(const route::RouteSpec& spec, std::string_view name) {
  if (iequals(name, "authorization") || iequals(name, "proxy-authorization") || iequals(name, "cookie")) return true;
  for (const auto& m : spec.record.mask)
    if (iequals(name, m)) return true;
  return false;
}
}  // namespace

void Recorder::on_stream_end(const EndRecord& r) {
  const Stream* st = r.stream;
  if (!st || !st->route || !shared_) return;
  const route::RouteSpec& spec = st->route->spec;
  if (!spec.record.count) return;
  std::string key = "record\n" + spec.name + "\n" + spec.record.id;
  if (shared_->incr(shared_->key(SharedTable::kCounter, key), 1, 0, shared_->now()) > spec.record.count) return;
  const http::Head& h = st->req;
  json headers = json::array();
  for (size_t i = 0; i < h.headers.size(); i++) {
    std::string_view n = h.name(i);
    if (iequals(n, "host")) continue;
    headers.push_back({n, masked(spec, n) ? std::string_view("<masked>") : h.value(i)});
  }
  json line = {{"route", spec.name},
               {"method", std::string(r.method)},
               {"uri", std::string(r.target)},
               {"host", std::string(r.host)},
               {"headers", headers},
               {"client", r.client.str()},
               {"tls", r.tls},
               {"request_id", std::string(r.request_id)}};
  json resp = {{"status", r.status}};
  if (!st->local && st->resp.status) {
    json rh = json::array();
    for (size_t i = 0; i < st->resp.headers.size(); i++) {
      std::string_view n = st->resp.name(i);
      rh.push_back({n, iequals(n, "set-cookie") || masked(spec, n) ? std::string_view("<masked>") : st->resp.value(i)});
    }
    resp["headers"] = rh;
  }
  line["response"] = resp;
  std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::string path = dir_ + "/" + spec.name + ".jsonl";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    PX_WARN("route %s: cannot record a request to %s: %s", spec.name.c_str(), path.c_str(), strerror(errno));
  if (fd >= 0) ::close(fd);
}

}  // namespace px::proxy
