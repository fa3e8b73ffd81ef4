// pxd — the px data plane. See pxd(8).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/log.h"
#include "daemon/config.h"
#include "daemon/server.h"

static void usage(FILE* f) {
  std::fprintf(f,
               "usage: pxd [-c FILE] [--check-config] [--version]\n"
               "  -c, --config FILE   bootstrap configuration (default /etc/px/pxd.conf)\n"
               "  -t, --check-config  check the configuration and exit (0 ok, 2 invalid)\n"
               "  -V, --version       print the version\n");
}

int main(int argc, char** argv) {
  std::string path = "/etc/px/pxd.conf";
  bool check = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--config") && i + 1 < argc)
      path = argv[++i];
    else if (a == "-t" || a == "--check-config")
      check = true;
    else if (a == "-V" || a == "--version") {
      std::printf("pxd %s\n", PX_VERSION);
      return 0;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "pxd: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  px::Config cfg;
  std::string err;
  if (!px::load_config_file(path, &cfg, &err)) {
    std::fprintf(stderr, "pxd: %s\n", err.c_str());
    return 2;
  }
  if (check) {
    std::printf("pxd: %s: configuration ok\n", path.c_str());
    return 0;
  }
  px::log::Level lvl;
  if (px::log::parse_level(cfg.log_level.c_str(), &lvl)) px::log::set_level(lvl);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);  // a file size limit (RLIMIT_FSIZE) makes a write fail with EFBIG (the cache says so)
  px::proxy::Server server(std::move(cfg));
  // For an upgrade (SIGUSR2): the program as it was found at start, and the same arguments.
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  server.set_command(n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string(argv[0]),
                     std::vector<std::string>(argv, argv + argc));
  return server.run();
}
