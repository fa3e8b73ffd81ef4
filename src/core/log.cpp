#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace px::log {

static std::atomic<int> g_level{static_cast<int>(Level::info)};

void set_level(Level l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

bool parse_level(const char* s, Level* out) {
  static const char* names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (std::strcmp(s, names[i]) == 0) {
      *out = static_cast<Level>(i);
      return true;
    }
  return false;
}

void write(Level l, const char* fmt, ...) {
  static const char* tags[] = {"error", "warn", "info", "debug"};
  char line[2048];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ", t.tm_year + 1900, t.tm_mon + 1,
                        t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000, tags[static_cast<int>(l)]);
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t r = ::write(2, line, len);
  (void)r;
}

}  // namespace px::log
