// px::fleet::Etcd — pxadmind's etcd client: etcd v3's JSON gateway (/v3/kv/range, /v3/kv/txn, /v3/watch)
// over the project's own HTTP/1 client (http/client.h) and TLS, with client certificates.
//
// Why the JSON gateway and not gRPC: it needs nothing beyond the HTTP/1 client every other off-path call
// already uses (ACME, OCSP, health probes), the calls pxadmind makes are few and small, and a watch is one
// streamed response of JSON objects. gRPC would add libgrpc++ and its threads to pxadmind for no gain here.
//
// Keys and values travel base64-encoded; 64-bit numbers are JSON strings (protobuf's JSON mapping).
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "http/client.h"

namespace px::fleet {

using json = nlohmann::json;

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "https://10.0.0.1:2379"
  std::string ca_file;                 // verifies etcd's certificates ("" = the system's bundle)
  std::string cert_file, key_file;     // this host's client certificate
  std::string user, password_file;     // etcd's own authentication (the password is read from the file)
  uint64_t timeout_ms = 5000;          // one call
};

std::string b64(std::string_view bytes);
bool unb64(std::string_view text, std::string* out);
// "/px/edge/" → the range_end that covers every key under it ("/px/edge0").
std::string prefix_end(std::string_view prefix);
// A 64-bit field as the gateway writes it (a string, or absent for 0).
uint64_t num(const json& obj, const char* field);

class Etcd {
 public:
  explicit Etcd(EtcdOptions opt) : opt_(std::move(opt)) {}
  const EtcdOptions& options() const { return opt_; }

  // Checks the options (URLs, files) before any call: false with a message naming the problem.
  bool check(std::string* error) const;

  // One call, blocking (a loop of its own), on each endpoint in turn from the last that answered.
  // False when none answered (error names each endpoint and why) or the answer was an error.
  bool call(const std::string& path, const json& body, json* out, std::string* error);

  // etcd's authentication: a token for user and password, asked for again when etcd says it expired.
  bool authenticate(std::string* error);
  bool uses_auth() const { return !opt_.user.empty(); }
  bool has_token() const { return !token_.empty(); }
  // Whether an answer says the token is no longer good (it expired, or etcd restarted with simple tokens).
  static bool token_refused(int status, std::string_view body);

  // Sets up a client (timeout, body limit, TLS): the follower's, and each call's. The TLS context is made
  // once, and keeps the session each endpoint gave, so that the next call resumes it instead of a full
  // handshake with client certificates.
  bool setup(http::Client& c, std::string* error) const;
  // The request for a call to `path` on endpoint i.
  http::ClientRequest request(size_t endpoint, const std::string& path, const json& body) const;
  // The endpoint calls go to first, and the move to the next one after a failure.
  size_t preferred() const { return good_; }
  const std::string& preferred_url() const { return opt_.endpoints[good_]; }
  void next() { good_ = (good_ + 1) % opt_.endpoints.size(); }

 private:
  bool call_once(const std::string& path, const json& body, json* out, std::string* error, bool* refused);
  EtcdOptions opt_;
  struct Tls {
    std::mutex mu;
    std::shared_ptr<http::ClientTls> tls;  // made at the first setup
  };
  std::shared_ptr<Tls> tls_ = std::make_shared<Tls>();
  size_t good_ = 0;    // the endpoint that answered last
  std::string token_;  // etcd's auth token, when a user is set
};

// Splits a stream of concatenated JSON objects (a watch's body) into whole objects.
class JsonStream {
 public:
  // Feeds bytes; calls fn for each whole object. False when the bytes are not JSON objects.
  bool feed(std::string_view bytes, const std::function<void(json&)>& fn);

 private:
  std::string buf_;
  size_t scanned_ = 0;
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false;
};

}  // namespace px::fleet
