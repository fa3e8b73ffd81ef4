// pxadmind's HTTP API: the route table (method + path pattern → handler) and
// the OpenAPI document that describes it. A unit test checks both list the
// same operations, so the document cannot drift from the code.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "admin/model.h"

namespace px::admin {

struct Request {
  std::string method;
  std::map<std::string, std::string> params;  // from {name} segments
  std::map<std::string, std::string> query;
  json body;  // null when there was none
  uint64_t if_match = 0;
  std::string who;      // "uid:1000", "token:ci" or "user:ada" (a dashboard session)
  std::string ip;       // the client's address (TCP), for the login limits
  std::string session;  // the dashboard's session cookie, when one came (ui listener)
};

struct Operation {
  std::string method;
  std::string pattern;  // "/v1/routes/{name}"
  std::function<Result(Admin&, Request&)> handler;
};

// pxd status files pxadmind reports on (GET /v1/status).
extern std::vector<std::string> g_pxd_status_files;
// The dashboard's sessions (pxadmind --ui), or nullptr.
class UiAuth;
extern UiAuth* g_ui;

const std::vector<Operation>& operations();
const char* openapi_document();

// Finds the operation for method + path; fills req.params. 404 / 405 otherwise.
const Operation* match(const std::string& method, const std::string& path, Request* req, int* status);

}  // namespace px::admin
