#include "core/strings.h"

namespace px {

bool list_has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

bool parse_u64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;  // above 2^64 - 1
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool parse_duration_ms(std::string_view s, uint64_t* out_ms) { return parse_duration(s, 1000, out_ms); }

bool parse_duration(std::string_view s, uint64_t bare_unit_ms, uint64_t* out_ms) {
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') i++;
  uint64_t v;
  if (!parse_u64(s.substr(0, i), &v)) return false;
  std::string_view unit = s.substr(i);
  uint64_t mul;
  if (unit.empty())
    mul = bare_unit_ms;
  else if (unit == "s")
    mul = 1000;
  else if (unit == "ms")
    mul = 1;
  else if (unit == "m")
    mul = 60000;
  else if (unit == "h")
    mul = 3600000;
  else
    return false;
  if (v > UINT64_MAX / mul) return false;
  *out_ms = v * mul;
  return true;
}

bool parse_size(std::string_view s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') i++;
  uint64_t v;
  if (!parse_u64(s.substr(0, i), &v)) return false;
  std::string_view unit = s.substr(i);
  uint64_t mul;
  if (unit.empty())
    mul = 1;
  else if (unit == "k" || unit == "K")
    mul = 1024;
  else if (unit == "m" || unit == "M")
    mul = 1024 * 1024;
  else if (unit == "g" || unit == "G")
    mul = 1024ull * 1024 * 1024;
  else
    return false;
  if (v > UINT64_MAX / mul) return false;
  *out = v * mul;
  return true;
}

std::vector<std::string> path_segments(std::string_view p) {
  std::vector<std::string> out;
  while (!p.empty()) {
    if (p.front() == '/') {
      p.remove_prefix(1);
      continue;
    }
    size_t slash = p.find('/');
    out.emplace_back(p.substr(0, slash));
    if (slash == std::string_view::npos) break;
    p.remove_prefix(slash);
  }
  return out;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

void append_dec(std::string& out, uint64_t v) {
  char buf[24];
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  out.append(p, static_cast<size_t>(buf + sizeof buf - p));
}

void append_hex(std::string& out, uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  char buf[20];
  char* p = buf + sizeof buf;
  do {
    *--p = digits[v & 15];
    v >>= 4;
  } while (v);
  out.append(p, static_cast<size_t>(buf + sizeof buf - p));
}

}  // namespace px
