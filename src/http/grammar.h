// px::http grammar — RFC 9112's message grammar, byte for byte, as small pure
// pieces the HTTP/1 parser (and its tests) use.
//
// Why px checks the grammar itself: llhttp 8.1 (Debian 12) accepts a bare CR
// after a chunk size, anything in place of the CRLF after chunk data, a bare CR
// at the start of a header line and an empty header name. A front proxy that
// reads such bytes differently can smuggle a request through px. So every byte
// of a head is checked here before the parser splits it, and px decodes bodies itself.
//
// What is accepted (ABNF from RFC 9110/9112; anything else is refused):
//   request-line  = method SP request-target SP HTTP-version CRLF
//                   (empty lines before it are skipped, RFC 9112 2.2)
//   method        = token
//   request-target= 1*( VCHAR except "#" )   (RFC 3986's set is not enforced; nginx
//                   does not either. Controls, space, "#" and bytes >= 0x80 are refused)
//   status-line   = HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF
//   field-line    = token ":" *( SP / HTAB / VCHAR / obs-text ) CRLF
//                   (so no empty name, no space before the colon, no obs-fold,
//                   no bare CR or LF, no NUL or other control in a value)
//   end of head   = CRLF
//   chunk line    = 1*HEXDIG [ chunk-ext ] CRLF, at most kMaxChunkLine bytes
//   chunk-ext     = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
//   chunk-data    = exactly chunk-size bytes, then CRLF
//   trailer       = *( field-line ) CRLF            (checked, then dropped)
//   Host          = uri-host [ ":" port ]  (RFC 3986 3.2.2; no userinfo, no comma)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace px::http {

enum CharClass : uint8_t {
  kTchar = 1,      // token (RFC 9110 5.6.2)
  kFieldChar = 2,  // field-vchar / SP / HTAB (obs-text included)
  kTarget = 4,     // request-target byte
  kHexDig = 8,
  kQdtext = 16,   // quoted-string text (RFC 9110 5.6.4)
  kRegName = 32,  // unreserved / sub-delims (RFC 3986), without ","
};
extern const uint8_t kCharClass[256];
inline bool has_class(unsigned char c, CharClass k) { return (kCharClass[c] & k) != 0; }

inline constexpr size_t kMaxChunkLine = 4096;

// Is this a valid Host value (or absolute-form authority)? Empty is valid (RFC 9110 7.2).
bool valid_host(std::string_view v);

// An incremental checker of a head's grammar (start line and field lines, or a
// trailer section). It never copies: it follows the bytes as they arrive.
class HeadGrammar {
 public:
  enum class Result : uint8_t { more, done, bad };
  void start_request() { st_ = kLead, n_ = 0, target_len_ = 0; }
  void start_response() { st_ = kRVersion, n_ = 0, idx_ = 0; }
  void start_trailers() { st_ = kFieldStart, n_ = 0; }
  void set_limit(size_t max_bytes) { limit_ = max_bytes; }
  void set_max_target(size_t max_bytes) { max_target_ = max_bytes; }  // 0: no limit
  // Scans p[0..len). done: *used is the number of bytes up to and including the
  // final LF; more: all bytes are part of the head; bad: see error(), and *used
  // is where the offending byte is.
  Result scan(const char* p, size_t len, size_t* used);
  const char* error() const { return error_; }
  bool too_large() const { return too_large_; }
  bool target_too_long() const { return target_too_long_; }
  bool started() const { return st_ != kLead || n_ != 0; }

 private:
  enum State : uint8_t {
    kLead,
    kLeadLf,
    kMethod,
    kTargetStart,
    kTargetRest,
    kVersion,
    kLineLf,
    kRVersion,
    kStatus,
    kReasonStart,
    kReason,
    kFieldStart,
    kName,
    kValue,
    kValueLf,
    kEndLf,
  };
  Result scan_(const unsigned char* s, size_t len, size_t* pos);
  Result fail(const char* why) {
    error_ = why;
    return Result::bad;
  }
  uint8_t st_ = kLead;
  uint8_t idx_ = 0;  // position within a fixed part (version, status)
  bool too_large_ = false;
  size_t n_ = 0;  // bytes of this head so far
  size_t limit_ = 64 * 1024;
  size_t max_target_ = 0;  // request target bytes allowed (414 past them); 0: no limit
  size_t target_len_ = 0;
  bool target_too_long_ = false;
  const char* error_ = nullptr;
};

// An incremental checker and decoder of chunk lines (RFC 9112 7.1): feed it the
// bytes after a chunk's data CRLF (or after the head) until it says done.
class ChunkLine {
 public:
  enum class Result : uint8_t { more, done, bad };
  void start() { st_ = kSize, n_ = 0, size_ = 0; }
  Result scan(const char* p, size_t len, size_t* used);  // bad: *used is where the offending byte is
  uint64_t size() const { return size_; }
  const char* error() const { return error_; }

 private:
  enum State : uint8_t {
    kSize,
    kSizeMore,
    kSizeBws,
    kExtPreName,
    kExtName,
    kExtNameBws,
    kExtPreVal,
    kExtTok,
    kExtQuoted,
    kExtQpair,
    kExtValBws,
    kLf,
  };
  Result fail(const char* why) {
    error_ = why;
    return Result::bad;
  }
  uint8_t st_ = kSize;
  size_t n_ = 0;
  uint64_t size_ = 0;
  const char* error_ = nullptr;
};

}  // namespace px::http
