// Small string helpers shared by the config parser, the HTTP layer and the router.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px {

inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

inline std::string to_lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = ascii_lower(c);
  return r;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Does the comma-separated token list `list` contain `token` (case-insensitive)?
bool list_has_token(std::string_view list, std::string_view token);

// "30s", "500ms", "2m", "1h", bare number = seconds. Returns false on bad syntax.
bool parse_duration_ms(std::string_view s, uint64_t* out_ms);
// "16k", "1m", "2g" (binary units), bare number = bytes.
bool parse_size(std::string_view s, uint64_t* out);
bool parse_u64(std::string_view s, uint64_t* out);

// "/api//v1/" -> {"api", "v1"}: the path segments routes match on. The router
// and pxadmind's conflict index both use it, so they agree on what a prefix is.
std::vector<std::string> path_segments(std::string_view path);

// Appends the decimal / hex representation of v.
void append_dec(std::string& out, uint64_t v);
void append_hex(std::string& out, uint64_t v);

}  // namespace px
