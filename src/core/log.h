// px::log — one line per event on stderr (journald picks it up under systemd).
// Levels: error, warn, info, debug. Thread-safe: each line is one write(2).
#pragma once
#include <cstdarg>

namespace px::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

void set_level(Level l);
Level level();
bool parse_level(const char* s, Level* out);

void write(Level l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace px::log

#define PX_LOG(lvl, ...)                                                                                   \
  do {                                                                                                     \
    if (static_cast<int>(lvl) <= static_cast<int>(::px::log::level())) ::px::log::write(lvl, __VA_ARGS__); \
  } while (0)
#define PX_ERR(...) PX_LOG(::px::log::Level::error, __VA_ARGS__)
#define PX_WARN(...) PX_LOG(::px::log::Level::warn, __VA_ARGS__)
#define PX_INFO(...) PX_LOG(::px::log::Level::info, __VA_ARGS__)
#define PX_DEBUG(...) PX_LOG(::px::log::Level::debug, __VA_ARGS__)
