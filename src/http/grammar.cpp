#include "http/grammar.h"

#include <algorithm>
#include <array>

namespace px::http {

namespace {
constexpr std::array<uint8_t, 256> make_classes() {
  std::array<uint8_t, 256> t{};
  auto alnum = [](int c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  for (int c = 0; c < 256; c++) {
    uint8_t k = 0;
    bool tspecial_ok = false;
    for (char s : std::string_view("!#$%&'*+-.^_`|~"))
      if (c == static_cast<unsigned char>(s)) tspecial_ok = true;
    if (alnum(c) || tspecial_ok) k |= kTchar;
    if (c == ' ' || c == '\t' || (c >= 0x21 && c <= 0x7e) || c >= 0x80) k |= kFieldChar;
    if (c >= 0x21 && c <= 0x7e && c != '#') k |= kTarget;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) k |= kHexDig;
    if (c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80)
      k |= kQdtext;
    bool sub = false;
    for (char s : std::string_view("-._~!$&'()*+;="))
      if (c == static_cast<unsigned char>(s)) sub = true;
    if (alnum(c) || sub) k |= kRegName;
    t[static_cast<size_t>(c)] = k;
  }
  return t;
}
constexpr std::array<uint8_t, 256> kTable = make_classes();
}  // namespace

const uint8_t kCharClass[256] = {
#define R(i) \
  kTable[i], kTable[i + 1], kTable[i + 2], kTable[i + 3], kTable[i + 4], kTable[i + 5], kTable[i + 6], kTable[i + 7]
#define R64(i) R(i), R(i + 8), R(i + 16), R(i + 24), R(i + 32), R(i + 40), R(i + 48), R(i + 56)
    R64(0), R64(64), R64(128), R64(192)
#undef R64
#undef R
};

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Word-at-a-time scans (8 bytes per step; exact as booleans, see "Bit Twiddling
// Hacks": hasless, haszero): they skip the long runs of ordinary bytes, and
// the per-byte table decides wherever a word holds anything else.
namespace {
constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
inline uint64_t load8(const unsigned char* p) {
  uint64_t x;
  __builtin_memcpy(&x, p, 8);
  return x;
}
inline uint64_t has_less(uint64_t x, uint8_t n) { return (x - kOnes * n) & ~x & kHighs; }
inline uint64_t has_byte(uint64_t x, uint8_t b) { return has_less(x ^ (kOnes * b), 1); }

// The first index from i on whose byte is not a field-value byte (SP, HTAB, VCHAR, obs-text).
// In a word, the lowest flagged byte is exact (a false flag can only follow a true one).
inline size_t skip_field_chars(const unsigned char* s, size_t i, size_t len) {
  while (i + 8 <= len) {
    uint64_t x = load8(s + i);
    uint64_t m = has_less(x, 0x20) | has_byte(x, 0x7f);
    if (!m) {
      i += 8;
      continue;
    }
    i += static_cast<size_t>(__builtin_ctzll(m)) >> 3;
    if (s[i] != '\t') return i;
    i++;  // HTAB is a field byte
  }
  while (i < len && has_class(s[i], kFieldChar)) i++;
  return i;
}

// The same for request-target bytes (VCHAR except "#").
inline size_t skip_target_chars(const unsigned char* s, size_t i, size_t len) {
  while (i + 8 <= len) {
    uint64_t x = load8(s + i);
    uint64_t m = has_less(x, 0x21) | (x & kHighs) | has_byte(x, 0x7f) | has_byte(x, '#');
    if (m) return i + (static_cast<size_t>(__builtin_ctzll(m)) >> 3);
    i += 8;
  }
  while (i < len && has_class(s[i], kTarget)) i++;
  return i;
}

inline size_t skip_tchars(const unsigned char* s, size_t i, size_t len) {
  while (i + 4 <= len &&
         (kCharClass[s[i]] & kCharClass[s[i + 1]] & kCharClass[s[i + 2]] & kCharClass[s[i + 3]] & kTchar))
    i += 4;
  while (i < len && has_class(s[i], kTchar)) i++;
  return i;
}
}  // namespace

bool valid_host(std::string_view v) {
  size_t i = 0;
  const auto* s = reinterpret_cast<const unsigned char*>(v.data());
  if (!v.empty() && v[0] == '[') {
    // IP-literal: an IPv6 address (hex digits, colons, a dotted tail). IPvFuture is not accepted.
    size_t close = v.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    bool colon = false;
    for (size_t k = 1; k < close; k++) {
      unsigned char c = static_cast<unsigned char>(v[k]);
      if (c == ':')
        colon = true;
      else if (!has_class(c, kHexDig) && c != '.')
        return false;
    }
    if (!colon) return false;
    i = close + 1;
  } else {
    while (true) {
      while (i < v.size() && has_class(s[i], kRegName)) i++;  // ':' and '%' are not reg-name bytes
      if (i == v.size() || s[i] != '%') break;
      if (i + 2 >= v.size() || !has_class(s[i + 1], kHexDig) || !has_class(s[i + 2], kHexDig)) return false;
      i += 3;
    }
  }
  if (i == v.size()) return true;
  if (v[i] != ':') return false;
  std::string_view port = v.substr(i + 1);
  if (port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

namespace {
inline bool crlf(const unsigned char* s, size_t i, size_t len) {
  return i + 1 < len && s[i] == '\r' && s[i + 1] == '\n';
}
inline bool version_at(const unsigned char* s, size_t i, size_t len) {
  if (i + 8 > len) return false;
  uint64_t x = load8(s + i);
  unsigned major = static_cast<unsigned>(x >> 40 & 0xff) - '0', minor = static_cast<unsigned>(x >> 56) - '0';
  return (x & 0x00ff00ffffffffffull) == 0x002e002f50545448ull && major <= 9 && minor <= 9;
}

// A whole, ordinary head in one buffer, in one tight pass: returns its length,
// or 0 when anything is unusual or missing (the state machine then goes over
// it from the start, and finds the exact error or waits for more bytes).
size_t fast_head(const unsigned char* s, size_t len, bool request, size_t max_target) {
  size_t i = 0;
  if (request) {
    size_t m = skip_tchars(s, 0, len);
    if (m == 0 || m >= len || s[m] != ' ') return 0;
    size_t t = skip_target_chars(s, m + 1, len);
    if (t == m + 1 || t >= len || s[t] != ' ' || !version_at(s, t + 1, len)) return 0;
    if (max_target && t - (m + 1) > max_target) return 0;
    i = t + 9;
  } else {
    if (!version_at(s, 0, len) || len < 13 || s[8] != ' ' || static_cast<unsigned>(s[9] - '0') > 9 ||
        static_cast<unsigned>(s[10] - '0') > 9 || static_cast<unsigned>(s[11] - '0') > 9)
      return 0;
    i = 12;
    if (s[i] == ' ') i = skip_field_chars(s, i + 1, len);
  }
  if (!crlf(s, i, len)) return 0;
  i += 2;
  while (true) {
    if (i < len && s[i] == '\r') return crlf(s, i, len) ? i + 2 : 0;
    size_t n = skip_tchars(s, i, len);
    if (n == i || n >= len || s[n] != ':') return 0;
    size_t e = skip_field_chars(s, n + 1, len);
    if (!crlf(s, e, len)) return 0;
    i = e + 2;
  }
}
}  // namespace

HeadGrammar::Result HeadGrammar::scan(const char* p, size_t len, size_t* used) {
  const auto* s = reinterpret_cast<const unsigned char*>(p);
  // Only the bytes up to the limit are looked at: an error before it is
  // reported as such, and reaching it is "too large", however the bytes arrive.
  size_t cap = limit_ > n_ ? std::min(len, limit_ - n_) : 0;
  if (n_ == 0 && (st_ == kLead || st_ == kRVersion)) {
    size_t n = fast_head(s, cap, st_ == kLead, max_target_);
    if (n) {
      n_ = n;
      *used = n;
      return Result::done;
    }
  }
  size_t i = 0;
  Result r = scan_(s, cap, &i);
  *used = i;
  if (r == Result::more && cap < len) {
    too_large_ = true;
    return fail("head too large");
  }
  return r;
}

HeadGrammar::Result HeadGrammar::scan_(const unsigned char* s, size_t len, size_t* pos) {
  size_t& i = *pos;
  while (i < len) {
    unsigned char c = s[i];
    switch (st_) {
      case kLead:
        if (c == '\r')
          st_ = kLeadLf;
        else if (has_class(c, kTchar))
          st_ = kMethod;
        else
          return fail("invalid request line");
        i++;
        break;
      case kLeadLf:
        if (c != '\n') return fail("bare CR in the request line");
        st_ = kLead;
        i++;
        break;
      case kMethod:
        i = skip_tchars(s, i, len);
        if (i == len) break;
        if (s[i] != ' ') return fail("invalid method");
        st_ = kTargetStart;
        i++;
        break;
      case kTargetStart:
        if (!has_class(c, kTarget)) return fail("invalid request target");
        st_ = kTargetRest;
        target_len_ = 0;
        [[fallthrough]];
      case kTargetRest: {
        size_t start = i;
        i = skip_target_chars(s, i, len);
        target_len_ += i - start;
        if (max_target_ && target_len_ > max_target_) {
          i -= target_len_ - max_target_;  // the first byte past the limit
          target_too_long_ = true;
          return fail("request target too long");
        }
        if (i == len) break;
        if (s[i] != ' ') return fail("invalid character in the request target");
        st_ = kVersion;
        idx_ = 0;
        i++;
        break;
      }
      case kVersion:
      case kRVersion: {
        if (idx_ == 0 && i + 8 <= len) {
          // "HTTP/d.d" in one compare, the usual case.
          uint64_t x = load8(s + i);
          unsigned major = static_cast<unsigned>(x >> 40 & 0xff) - '0', minor = static_cast<unsigned>(x >> 56) - '0';
          if ((x & 0x00ff00ffffffffffull) == 0x002e002f50545448ull && major <= 9 && minor <= 9) {
            i += 8;
            st_ = st_ == kVersion ? kLineLf : kStatus;
            idx_ = 0;
            break;
          }
        }
        // "HTTP/" DIGIT "." DIGIT
        static constexpr char kShape[] = "HTTP/0.0";
        bool ok =
            idx_ == 5 || idx_ == 7 ? is_digit(static_cast<char>(c)) : c == static_cast<unsigned char>(kShape[idx_]);
        if (!ok) return fail("invalid HTTP version");
        i++;
        if (++idx_ == 8) {
          st_ = st_ == kVersion ? kLineLf : kStatus;  // kLineLf: idx_ 0 expects CR, 1 expects LF
          idx_ = 0;
        }
        break;
      }
      case kStatus:
        // SP 3DIGIT
        if (idx_ == 0 ? c != ' ' : !is_digit(static_cast<char>(c))) return fail("invalid status line");
        i++;
        if (++idx_ == 4) st_ = kReasonStart;
        break;
      case kReasonStart:
        if (c == ' ')
          st_ = kReason;
        else if (c == '\r')
          st_ = kLineLf, idx_ = 1;
        else
          return fail("invalid status line");
        i++;
        break;
      case kReason:
        i = skip_field_chars(s, i, len);
        if (i == len) break;
        if (s[i] != '\r') return fail("invalid character in the reason phrase");
        st_ = kLineLf;
        idx_ = 1;
        i++;
        break;
      case kLineLf:
        if (idx_ == 0) {
          if (c != '\r') return fail("invalid request line");
          idx_ = 1;
        } else {
          if (c != '\n') return fail("bare CR in the start line");
          st_ = kFieldStart;
        }
        i++;
        break;
      case kFieldStart:
        if (has_class(c, kTchar)) {
          // The common case, a whole field line in this buffer, in one step.
          size_t j = skip_tchars(s, i + 1, len);
          if (j < len && s[j] == ':') {
            size_t e = skip_field_chars(s, j + 1, len);
            if (e + 1 < len && s[e] == '\r' && s[e + 1] == '\n') {
              i = e + 2;
              break;
            }
          }
          st_ = kName;  // otherwise byte by byte, for the precise error or the next buffer
          i++;
          break;
        }
        if (c == '\r')
          st_ = kEndLf;
        else if (c == ' ' || c == '\t')
          return fail("obsolete line folding");
        else if (c == ':')
          return fail("empty header name");
        else
          return fail("invalid character in a header name");
        i++;
        break;
      case kName:
        i = skip_tchars(s, i, len);
        if (i == len) break;
        if (s[i] == ':')
          st_ = kValue;
        else if (s[i] == ' ' || s[i] == '\t')
          return fail("whitespace between a header name and the colon");
        else
          return fail("invalid character in a header name");
        i++;
        break;
      case kValue:
        i = skip_field_chars(s, i, len);
        if (i == len) break;
        if (s[i] != '\r') return fail("invalid character in a header value");
        st_ = kValueLf;
        i++;
        break;
      case kValueLf:
        if (c != '\n') return fail("bare CR in a header line");
        st_ = kFieldStart;
        i++;
        break;
      case kEndLf:
        if (c != '\n') return fail("bare CR at the end of the head");
        i++;
        n_ += i;
        return Result::done;
    }
  }
  n_ += len;
  return Result::more;
}

ChunkLine::Result ChunkLine::scan(const char* p, size_t len, size_t* used) {
  const auto* s = reinterpret_cast<const unsigned char*>(p);
  for (size_t i = 0; i < len; i++) {
    *used = i;
    if (++n_ > kMaxChunkLine) return fail("chunk line too long");
    unsigned char c = s[i];
    switch (st_) {
      case kSize:
      case kSizeMore:
        if (has_class(c, kHexDig)) {
          if (size_ >> 56) return fail("chunk size too large");
          unsigned d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
          size_ = size_ * 16 + d;
          st_ = kSizeMore;
        } else if (st_ == kSize) {
          return fail("invalid chunk size");
        } else if (c == '\r') {
          st_ = kLf;
        } else if (c == ';') {
          st_ = kExtPreName;
        } else if (c == ' ' || c == '\t') {
          st_ = kSizeBws;
        } else {
          return fail("invalid chunk size");
        }
        break;
      case kSizeBws:  // BWS is only allowed before a ";"
        if (c == ';')
          st_ = kExtPreName;
        else if (c != ' ' && c != '\t')
          return fail("invalid chunk extension");
        break;
      case kExtPreName:
        if (has_class(c, kTchar))
          st_ = kExtName;
        else if (c != ' ' && c != '\t')
          return fail("invalid chunk extension");
        break;
      case kExtName:
        if (has_class(c, kTchar)) break;
        if (c == '\r')
          st_ = kLf;
        else if (c == ';')
          st_ = kExtPreName;
        else if (c == '=')
          st_ = kExtPreVal;
        else if (c == ' ' || c == '\t')
          st_ = kExtNameBws;
        else
          return fail("invalid chunk extension");
        break;
      case kExtNameBws:
        if (c == ';')
          st_ = kExtPreName;
        else if (c == '=')
          st_ = kExtPreVal;
        else if (c != ' ' && c != '\t')
          return fail("invalid chunk extension");
        break;
      case kExtPreVal:
        if (has_class(c, kTchar))
          st_ = kExtTok;
        else if (c == '"')
          st_ = kExtQuoted;
        else if (c != ' ' && c != '\t')
          return fail("invalid chunk extension");
        break;
      case kExtTok:
        if (has_class(c, kTchar)) break;
        if (c == '\r')
          st_ = kLf;
        else if (c == ';')
          st_ = kExtPreName;
        else if (c == ' ' || c == '\t')
          st_ = kSizeBws;
        else
          return fail("invalid chunk extension");
        break;
      case kExtQuoted:
        if (c == '"')
          st_ = kExtValBws;
        else if (c == '\\')
          st_ = kExtQpair;
        else if (!has_class(c, kQdtext))
          return fail("invalid chunk extension");
        break;
      case kExtQpair:
        if (!(c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f))) return fail("invalid chunk extension");
        st_ = kExtQuoted;
        break;
      case kExtValBws:  // after a value: CR, ";" or BWS before a ";"
        if (c == '\r')
          st_ = kLf;
        else if (c == ';')
          st_ = kExtPreName;
        else if (c != ' ' && c != '\t')
          return fail("invalid chunk extension");
        else
          st_ = kSizeBws;
        break;
      case kLf:
        if (c != '\n') return fail("bare CR in a chunk line");
        *used = i + 1;
        return Result::done;
    }
  }
  *used = len;
  return Result::more;
}

}  // namespace px::http
