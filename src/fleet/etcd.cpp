#include "fleet/etcd.h"

#include <openssl/base64.h>
#include <unistd.h>

#include <cstdio>

#include "core/log.h"
#include "core/strings.h"

namespace px::fleet {

std::string b64(std::string_view bytes) {
  size_t n = 0;
  EVP_EncodedLength(&n, bytes.size());
  std::string out(n, '\0');
  size_t w = EVP_EncodeBlock(reinterpret_cast<uint8_t*>(out.data()), reinterpret_cast<const uint8_t*>(bytes.data()),
                             bytes.size());
  out.resize(w);
  return out;
}

bool unb64(std::string_view text, std::string* out) {
  size_t n = 0;
  if (!EVP_DecodedLength(&n, text.size())) return false;
  out->resize(n);
  if (!EVP_DecodeBase64(reinterpret_cast<uint8_t*>(out->data()), &n, n, reinterpret_cast<const uint8_t*>(text.data()),
                        text.size()))
    return false;
  out->resize(n);
  return true;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);  // prefixes end in '/', never 0xff
  return end;
}

uint64_t num(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (!it->is_string()) return 0;
  uint64_t v = 0;
  return parse_u64(it->get_ref<const std::string&>(), &v) ? v : 0;
}

bool Etcd::check(std::string* error) const {
  if (opt_.endpoints.empty()) {
    *error = "--etcd: no endpoint given";
    return false;
  }
  for (const std::string& e : opt_.endpoints) {
    bool tls;
    std::string host, target;
    uint16_t port;
    if (!http::split_url(e, &tls, &host, &port, &target) || (target != "/" && !target.empty())) {
      *error = "--etcd: '" + e + "' is not an endpoint URL such as https://10.0.0.1:2379";
      return false;
    }
  }
  for (const std::string* f : {&opt_.ca_file, &opt_.cert_file, &opt_.key_file})
    if (!f->empty() && access(f->c_str(), R_OK) != 0) {
      *error = *f + ": cannot be read";
      return false;
    }
  if (!opt_.password_file.empty() && access(opt_.password_file.c_str(), R_OK) != 0) {
    *error = "--etcd-password-file " + opt_.password_file + ": cannot be read";
    return false;
  }
  if (opt_.user.empty() != opt_.password_file.empty()) {
    *error = "--etcd-user and --etcd-password-file go together";
    return false;
  }
  if (opt_.cert_file.empty() != opt_.key_file.empty()) {
    *error = "--etcd-cert and --etcd-key go together";
    return false;
  }
  return true;
}

bool Etcd::setup(http::Client& c, std::string* error) const {
  c.timeout_ms = opt_.timeout_ms;
  c.max_body = 512 * 1024 * 1024;  // a whole fleet's keys in one range
  bool any_tls = false;
  for (const std::string& e : opt_.endpoints) any_tls |= e.starts_with("https:");
  if (!any_tls) return true;
  std::lock_guard<std::mutex> g(tls_->mu);
  if (!tls_->tls) {
    auto tls = std::make_shared<http::ClientTls>();
    if (!tls->set_ca_file(opt_.ca_file, error)) return false;
    if (!opt_.cert_file.empty() && !tls->set_client_cert(opt_.cert_file, opt_.key_file, error)) return false;
    tls_->tls = std::move(tls);
  }
  c.set_tls(tls_->tls);
  return true;
}

http::ClientRequest Etcd::request(size_t endpoint, const std::string& path, const json& body) const {
  http::ClientRequest rq;
  rq.method = "POST";
  std::string base = opt_.endpoints[endpoint % opt_.endpoints.size()];
  while (!base.empty() && base.back() == '/') base.pop_back();
  rq.url = base + path;
  rq.content_type = "application/json";
  rq.body = body.dump();
  if (!token_.empty()) rq.headers.emplace_back("Authorization", token_);
  return rq;
}

bool Etcd::token_refused(int status, std::string_view body) {
  return status == 401 || body.find("invalid auth token") != std::string_view::npos;
}

bool Etcd::authenticate(std::string* error) {
  std::string password;
  FILE* f = fopen(opt_.password_file.c_str(), "rb");
  if (!f) {
    *error = "--etcd-password-file " + opt_.password_file + ": cannot be read";
    return false;
  }
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  password.assign(buf, n);
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  token_.clear();
  json out;
  bool refused = false;
  if (!call_once("/v3/auth/authenticate", {{"name", opt_.user}, {"password", password}}, &out, error, &refused)) {
    *error = "etcd authentication as '" + opt_.user + "': " + *error;
    return false;
  }
  token_ = out.value("token", "");
  if (token_.empty()) {
    *error = "etcd authentication as '" + opt_.user + "': no token in the answer";
    return false;
  }
  return true;
}

bool Etcd::call(const std::string& path, const json& body, json* out, std::string* error) {
  if (uses_auth() && token_.empty() && !authenticate(error)) return false;
  bool refused = false;
  if (call_once(path, body, out, error, &refused)) return true;
  if (!refused || !uses_auth()) return false;
  // The token expired (--auth-token-ttl) or etcd forgot it: a new one, and the call once more.
  PX_INFO("etcd: the auth token of '%s' was refused: authenticating again", opt_.user.c_str());
  if (!authenticate(error)) return false;
  return call_once(path, body, out, error, &refused);
}

bool Etcd::call_once(const std::string& path, const json& body, json* out, std::string* error, bool* refused) {
  std::string why;
  size_t n = opt_.endpoints.size();
  for (size_t k = 0; k < n; k++) {
    size_t i = (good_ + k) % n;
    std::string setup_error;
    http::ClientResponse r = http::Client::fetch_now(request(i, path, body), [&](http::Client& c) {
      if (!setup(c, &setup_error)) c.timeout_ms = 1;
    });
    if (!setup_error.empty()) {
      *error = setup_error;
      return false;
    }
    if (r.status == 0) {
      why += (why.empty() ? "" : "; ") + opt_.endpoints[i] + ": " + r.error;
      continue;
    }
    good_ = i;
    json j = json::parse(r.body, nullptr, false);
    *refused = token_refused(r.status, r.body);
    if (r.status != 200 || j.is_discarded() || !j.is_object()) {
      std::string msg = j.is_object() ? j.value("message", j.value("error", std::string())) : r.body.substr(0, 200);
      *error = "etcd " + opt_.endpoints[i] + path + ": HTTP " + std::to_string(r.status) + ": " + msg;
      if (msg.find("CommonName of client") != std::string::npos)
        *error +=
            " (with authentication on, etcd's JSON gateway refuses client certificates that carry a Common "
            "Name: issue this host's certificate with the name in subjectAltName only)";
      return false;
    }
    *out = std::move(j);
    return true;
  }
  *error = "etcd unreachable: " + why;
  return false;
}

bool JsonStream::feed(std::string_view bytes, const std::function<void(json&)>& fn) {
  buf_.append(bytes);
  size_t start = 0;
  for (size_t i = scanned_; i < buf_.size(); i++) {
    char c = buf_[i];
    if (in_string_) {
      if (escaped_)
        escaped_ = false;
      else if (c == '\\')
        escaped_ = true;
      else if (c == '"')
        in_string_ = false;
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{') {
      if (depth_++ == 0) start = i;
    } else if (c == '}') {
      if (--depth_ < 0) return false;
      if (depth_ == 0) {
        json j = json::parse(std::string_view(buf_).substr(start, i + 1 - start), nullptr, false);
        if (j.is_discarded()) return false;
        fn(j);
        buf_.erase(0, i + 1);
        i = static_cast<size_t>(-1);
        start = 0;
      }
    } else if (depth_ == 0 && c != '\n' && c != '\r' && c != ' ') {
      return false;
    }
  }
  scanned_ = buf_.size();
  if (depth_ > 0 && start > 0) {
    buf_.erase(0, start);
    scanned_ -= start;
  }
  return true;
}

}  // namespace px::fleet
