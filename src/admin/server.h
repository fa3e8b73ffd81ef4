// pxadmind's server: HTTP/1.1 + JSON on a unix socket (peer uid is the
// credential) and, optionally, on a TCP address that requires a bearer token.
// One libuv loop; each request is handled whole (bodies up to 64 MiB).
#pragma once
#include <string>
#include <vector>

#include "admin/acme_manager.h"
#include "admin/ui_auth.h"
#include "fleet/fleet.h"

namespace px::admin {

struct ServerOptions {
  std::string data_dir = "/var/lib/px";
  std::string socket_path = "/run/px/admin.sock";
  int socket_mode = 0660;
  std::string tcp_listen;      // "127.0.0.1:9180"; empty = none
  std::string metrics_listen;  // Prometheus /metrics, no authentication ("127.0.0.1:9146"); empty = none
  std::string ui_listen;       // the web dashboard ("127.0.0.1:8081"); empty = none
  std::string ui_dir;          // its assets (index.html, app.js, app.css)
  UiOptions ui;
  std::vector<std::string> pxd_status_files = {"/run/px/pxd.status"};
  AcmeOptions acme;
  fleet::FleetOptions fleet;  // fleet mode when it names etcd endpoints
};

int run_server(const ServerOptions& opt);

}  // namespace px::admin
