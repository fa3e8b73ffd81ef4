// Small string helpers shared by the config parser, the HTTP layer and the router.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace px {

inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

namespace detail {
inline uint64_t load8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t load4x2(const char* p, size_t n) {  // 4 <= n <= 8: the first and the last 4 bytes
  uint32_t lo, hi;
  std::memcpy(&lo, p, 4);
  std::memcpy(&hi, p + n - 4, 4);
  return lo | (static_cast<uint64_t>(hi) << 32);
}
// ASCII A-Z to a-z in each of the 8 bytes of x, every other byte unchanged (no carries between bytes:
// each sum below stays under 0x100 because the high bit is masked off first).
inline uint64_t lower8(uint64_t x) {
  constexpr uint64_t ones = 0x0101010101010101ull;
  uint64_t h = x & (0x7f * ones);
  uint64_t ge_a = h + (0x80 - 'A') * ones;      // bit 7 set where the byte is >= 'A'
  uint64_t gt_z = h + (0x80 - 'Z' - 1) * ones;  // bit 7 set where the byte is > 'Z'
  uint64_t upper = ge_a & ~gt_z & ~x & (0x80 * ones);
  return x | (upper >> 2);
}
}  // namespace detail

// s equals `lower`, a lowercase literal, ignoring ASCII case: iequals with one
// side known at compile time (its loads fold to constants).
template <size_t N>
inline bool iequals_lower(std::string_view s, const char (&lower)[N]) {
  constexpr size_t n = N - 1;
  if (s.size() != n) return false;
  const char* p = s.data();
  using detail::lower8;
  if constexpr (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8)
      if (lower8(detail::load8(p + i)) != detail::load8(lower + i)) return false;
    return lower8(detail::load8(p + n - 8)) == detail::load8(lower + n - 8);
  } else if constexpr (n >= 4) {
    return lower8(detail::load4x2(p, n)) == detail::load4x2(lower, n);
  } else {
    for (size_t i = 0; i < n; i++)
      if (ascii_lower(p[i]) != lower[i]) return false;
    return true;
  }
}

// Does any byte of s equal one of Cs? 8 bytes at a time (a word has a byte equal
// to c exactly when word ^ (c in every byte) has a zero byte).
template <char... Cs>
inline bool contains_any(std::string_view s) {
  constexpr uint64_t ones = 0x0101010101010101ull;
  auto zero_byte = [](uint64_t v) { return (v - ones) & ~v & (0x80 * ones); };
  const char* p = s.data();
  size_t n = s.size(), i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = detail::load8(p + i);
    if ((zero_byte(x ^ (static_cast<unsigned char>(Cs) * ones)) | ...)) return true;
  }
  for (; i < n; i++)
    if (((p[i] == Cs) || ...)) return true;
  return false;
}

// ASCII case-insensitive equality, 8 bytes at a time: header names are compared
// on every request, several times.
inline bool iequals(std::string_view a, std::string_view b) {
  size_t n = a.size();
  if (n != b.size()) return false;
  const char* p = a.data();
  const char* q = b.data();
  using detail::lower8;
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8)
      if (lower8(detail::load8(p + i)) != lower8(detail::load8(q + i))) return false;
    return lower8(detail::load8(p + n - 8)) == lower8(detail::load8(q + n - 8));  // the last 8, overlapping
  }
  if (n >= 4) return lower8(detail::load4x2(p, n)) == lower8(detail::load4x2(q, n));
  for (size_t i = 0; i < n; i++)
    if (ascii_lower(p[i]) != ascii_lower(q[i])) return false;
  return true;
}

// ASCII A-Z to a-z in place, 8 bytes at a time (HTTP/2 field names, from upstreams that capitalise them).
// Lowercasing twice changes nothing, so the last word may overlap the one before.
inline void lower_in_place(char* p, size_t n) {
  auto store8 = [](char* d, uint64_t v) { std::memcpy(d, &v, 8); };
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8) store8(p + i, detail::lower8(detail::load8(p + i)));
    store8(p + n - 8, detail::lower8(detail::load8(p + n - 8)));
  } else if (n >= 4) {
    uint64_t v = detail::lower8(detail::load4x2(p, n));
    auto lo = static_cast<uint32_t>(v), hi = static_cast<uint32_t>(v >> 32);
    std::memcpy(p + n - 4, &hi, 4);  // (overlapping: the first 4 last, so both halves hold)
    std::memcpy(p, &lo, 4);
  } else {
    for (size_t i = 0; i < n; i++) p[i] = ascii_lower(p[i]);
  }
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
// The same with the unit of a bare number given (pxctl and the API: milliseconds where the field is one).
bool parse_duration(std::string_view s, uint64_t bare_unit_ms, uint64_t* out_ms);
inline constexpr const char* kDurationForms = "a number with ms, s, m or h (500ms, 30s, 5m, 1h)";
inline constexpr const char* kSizeForms = "a number of bytes, or with k, m or g (16k, 10m, 2g: binary units)";
// "16k", "1m", "2g" (binary units), bare number = bytes.
bool parse_size(std::string_view s, uint64_t* out);
// Decimal digits only, 0 to 2^64 - 1 (leading zeros allowed); false for anything else, or a larger number.
bool parse_u64(std::string_view s, uint64_t* out);

// "/api//v1/" -> {"api", "v1"}: the path segments routes match on. The router
// and pxadmind's conflict index both use it, so they agree on what a prefix is.
std::vector<std::string> path_segments(std::string_view path);

// Appends the decimal / hex representation of v.
void append_dec(std::string& out, uint64_t v);
// Lower-case hexadecimal of n bytes.
std::string to_hex(const uint8_t* p, size_t n);
void append_hex(std::string& out, uint64_t v);

// The 16 lower-case hex digits of v, most significant first, without a loop:
// each 32-bit half is spread to one nibble per byte, and every byte becomes its
// digit at once ('0' + n, plus 39 more from 'a' on).
inline void hex16(uint64_t v, char out[16]) {
  auto word = [](uint32_t h) {
    uint64_t x = h;
    x = ((x & 0xFFFF0000u) << 16) | (x & 0xFFFFu);
    x = ((x & 0x0000FF000000FF00ull) << 8) | (x & 0x000000FF000000FFull);
    x = ((x & 0x00F000F000F000F0ull) << 4) | (x & 0x000F000F000F000Full);           // nibble k in byte k
    uint64_t letters = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;  // bytes holding 10..15
    return __builtin_bswap64(x + 0x3030303030303030ull + letters * 39);
  };
  uint64_t hi = word(static_cast<uint32_t>(v >> 32)), lo = word(static_cast<uint32_t>(v));
  memcpy(out, &hi, 8);
  memcpy(out + 8, &lo, 8);
}

}  // namespace px
