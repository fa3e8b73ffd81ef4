#include "core/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace px::notify {

bool send(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path || (path[0] != '/' && path[0] != '@')) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (n >= sizeof sa.sun_path) return false;
  memcpy(sa.sun_path, path, n);
  if (path[0] == '@') sa.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ssize_t r = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n));
  close(fd);
  return r == static_cast<ssize_t>(state.size());
}

bool reloading() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t us = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  return send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(us));
}

uint64_t watchdog_usec() {
  const char* us = std::getenv("WATCHDOG_USEC");
  if (!us) return 0;
  const char* pid = std::getenv("WATCHDOG_PID");
  if (pid && std::strtol(pid, nullptr, 10) != getpid()) return 0;
  return std::strtoull(us, nullptr, 10);
}

}  // namespace px::notify
