// pxadmind — the px admin daemon, the only writer of the store. See pxadmind(8).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <string>

#include "admin/server.h"
#include "core/log.h"

int main(int argc, char** argv) {
  px::admin::ServerOptions opt;
  std::string mode = "0660", level = "info";
  std::vector<std::string> status_files;
  CLI::App app{"pxadmind: the px admin daemon, the only writer of the px store"};
  app.add_option("-d,--data-dir", opt.data_dir, "store directory (created if missing)")->capture_default_str();
  app.add_option("-s,--socket", opt.socket_path, "unix socket for the API")->capture_default_str();
  app.add_option("--socket-mode", mode, "permissions of the unix socket (octal)")->capture_default_str();
  app.add_option("-l,--listen", opt.tcp_listen, "also serve the API on this TCP ADDRESS:PORT (bearer tokens required)");
  app.add_option("--metrics", opt.metrics_listen,
                 "serve Prometheus metrics on http://ADDRESS:PORT/metrics (no authentication: keep it on loopback)");
  opt.ui_dir = px::admin::default_ui_dir();
  int64_t idle_s = 1800;
  app.add_option(
      "--ui", opt.ui_listen,
      "serve the web dashboard on http://ADDRESS:PORT/ui/ (sessions; put it behind a TLS route to expose it)");
  app.add_option("--ui-assets", opt.ui_dir, "the dashboard's files")->capture_default_str();
  app.add_option("--ui-idle", idle_s, "seconds a dashboard session may sit unused")
      ->capture_default_str()
      ->check(CLI::Range(1, 24 * 3600));
  app.add_option("--pxd-status", status_files,
                 "pxd status_file(s) to report in /v1/status (default /run/px/pxd.status)");
  auto& a = opt.acme;
  app.add_option("--acme-directory", a.directory, "ACME CA: a directory URL, letsencrypt or letsencrypt-staging")
      ->capture_default_str();
  app.add_option("--acme-email", a.email, "the ACME account's contact address");
  app.add_option("--acme-ca", a.ca_file, "PEM CAs to verify the ACME server with (default: the system's)");
  app.add_option("--dns-hook", a.dns_hook, "DNS-01: a command run as HOOK add|del FQDN VALUE (wildcard names need it)");
  app.add_option("--dns-resolver", a.dns_resolver,
                 "DNS-01: ADDRESS:PORT asked whether the TXT record is visible (default: /etc/resolv.conf's first)");
  app.add_flag("--acme-prefer-dns", a.prefer_dns, "DNS-01 for every name, not only wildcards");
  app.add_option("--acme-retry-min", a.retry_min_s, "seconds before the first retry after a failure (doubles)")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_option("--dns-timeout", a.dns_timeout_s, "seconds a TXT record may take to become visible")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  auto& f = opt.fleet;
  std::string etcd;
  app.add_option("--etcd", etcd,
                 "fleet mode: the etcd cluster's client URLs, comma-separated (https://10.0.0.1:2379,...)");
  app.add_option("--etcd-ca", f.etcd.ca_file, "PEM CAs to verify etcd's certificates with (default: the system's)");
  app.add_option("--etcd-cert", f.etcd.cert_file, "this host's client certificate for etcd (PEM)");
  app.add_option("--etcd-key", f.etcd.key_file, "its private key (PEM)");
  app.add_option("--etcd-user", f.etcd.user, "etcd's own authentication: the user");
  app.add_option("--etcd-password-file", f.etcd.password_file,
                 "... and a file holding its password (never on the command line)");
  app.add_option("--fleet-name", f.name, "the fleet: its configuration lives under /px/NAME/ in etcd")
      ->capture_default_str();
  app.add_option("--host-name", f.host, "this host's name in the fleet (default: the hostname)");
  app.add_option("--fleet-key", f.key_file,
                 "the fleet key (32 bytes; the same file on every host): seals private keys and accounts in etcd");
  app.add_option("--fleet-join", f.join,
                 "first start with a store of its own: replace (take the fleet's configuration) or seed (push this "
                 "one into an empty fleet)")
      ->check(CLI::IsMember({"replace", "seed"}));
  app.add_option("--fleet-host-ttl", f.host_ttl_s,
                 "seconds a stopped host stays listed in fleet status (its status is published every third of it)")
      ->capture_default_str()
      ->check(CLI::Range(3, 3600));
  app.add_option("--log-level", level, "error, warn, info or debug")->capture_default_str();
  app.set_version_flag("-V,--version", std::string("pxadmind ") + PX_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  px::log::Level l;
  if (!px::log::parse_level(level.c_str(), &l)) {
    std::fprintf(stderr, "pxadmind: --log-level: expected error, warn, info or debug, got '%s'\n", level.c_str());
    return 2;
  }
  px::log::set_level(l);
  char* end = nullptr;
  long m = std::strtol(mode.c_str(), &end, 8);
  if (!end || *end || m < 0 || m > 0777) {
    std::fprintf(stderr, "pxadmind: --socket-mode: '%s' is not an octal mode such as 0660\n", mode.c_str());
    return 2;
  }
  opt.socket_mode = static_cast<int>(m);
  if (!a.dns_hook.empty() && access(a.dns_hook.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "pxadmind: --dns-hook: %s is not an executable file\n", a.dns_hook.c_str());
    return 2;
  }
  if (!status_files.empty()) opt.pxd_status_files = status_files;
  for (size_t at = 0; !etcd.empty() && at <= etcd.size();) {
    size_t comma = etcd.find(',', at);
    if (comma == std::string::npos) comma = etcd.size();
    if (comma > at) f.etcd.endpoints.push_back(etcd.substr(at, comma - at));
    at = comma + 1;
  }
  bool valid_name = !f.name.empty() && f.name.size() <= 64;
  for (char c : f.name) valid_name &= std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  if (!valid_name) {
    std::fprintf(stderr, "pxadmind: --fleet-name: '%s' is not a name ([A-Za-z0-9._-]{1,64})\n", f.name.c_str());
    return 2;
  }
  opt.ui.idle_s = idle_s;
  signal(SIGPIPE, SIG_IGN);
  return px::admin::run_server(opt);
}
