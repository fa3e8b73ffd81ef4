#include "observe/access_log.h"

#include "lua/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/log.h"
#include "core/strings.h"

namespace px::proxy {

namespace {

// Bytes a JSON string may hold as they are.
constexpr std::array<bool, 256> kJsonSafe = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x7f; c++) t[static_cast<size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

// A JSON string at p (room for 2 + 6 * s.size() bytes); returns the end.
char* json_str_raw(char* p, std::string_view s) {
  *p++ = '"';
  const char* d = s.data();
  size_t n = s.size(), i = 0;
  while (i < n) {
    size_t run = i;
    while (run < n && kJsonSafe[static_cast<unsigned char>(d[run])]) run++;
    memcpy(p, d + i, run - i);
    p += run - i;
    if (run == n) break;
    unsigned char c = static_cast<unsigned char>(d[run]);
    *p++ = '\\';
    if (c == '"' || c == '\\') {
      *p++ = static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      *p++ = 'u';
      *p++ = '0';
      *p++ = '0';
      *p++ = hex[c >> 4];
      *p++ = hex[c & 15];
    }
    i = run + 1;
  }
  *p++ = '"';
  return p;
}

char* dec_raw(char* p, uint64_t v) {
  char b[24];
  char* e = b + sizeof b;
  char* q = e;
  do {
    *--q = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  memcpy(p, q, static_cast<size_t>(e - q));
  return p + (e - q);
}

// ,"name": for each of kAccessLogFields, made once, each in 24 bytes so that a key is copied with one
// fixed-size (inlined) copy and the pointer advanced by its length.
struct KeyText {
  char text[24];
  uint8_t len;
};
const std::array<KeyText, kAccessLogFieldCount> kKeys = [] {
  std::array<KeyText, kAccessLogFieldCount> k{};
  for (int i = 0; i < kAccessLogFieldCount; i++) {
    std::string t = std::string(",\"") + kAccessLogFields[i] + "\":";
    memcpy(k[static_cast<size_t>(i)].text, t.data(), t.size());
    k[static_cast<size_t>(i)].len = static_cast<uint8_t>(t.size());
  }
  return k;
}();

// Combined log format quoting: the value as is, but " and \ and controls escaped (as nginx does).
void clf_str(std::string* o, std::string_view s) {
  if (s.empty()) {
    o->push_back('-');
    return;
  }
  for (unsigned char c : s) {
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02X", c);
      o->append(b);
    } else {
      o->push_back(static_cast<char>(c));
    }
  }
}

}  // namespace

void format_access_line(std::string* o, const EndRecord& r, AccessLogFormat f, const LineTexts& t) {
  std::string_view ip = t.client;
  const char* clf_time = t.clf_time;
  const char* iso_prefix = t.iso_prefix;
  int millis = t.millis;
  if (f == AccessLogFormat::combined) {
    // host - - [time] "METHOD target HTTP/x.y" status bytes "referer" "user-agent"
    o->append(ip);
    o->append(" - - [");
    o->append(clf_time);
    o->append("] \"");
    clf_str(o, r.method);
    o->push_back(' ');
    clf_str(o, r.target);
    o->append(" HTTP/");
    append_dec(*o, r.http_major);
    o->push_back('.');
    append_dec(*o, r.http_minor);
    o->append("\" ");
    append_dec(*o, r.status);
    o->push_back(' ');
    append_dec(*o, r.bytes_out);
    o->append(" \"");
    clf_str(o, r.referer);
    o->append("\" \"");
    clf_str(o, r.user_agent);
    o->append("\"\n");
    return;
  }
  // JSON: written through a raw pointer into room made for the worst case (every string byte escaped
  // as \u00XX), then trimmed: no per-piece capacity checks.
  size_t strings = r.host.size() + r.method.size() + r.target.size() + r.route.size() + r.peer.size() + r.sni.size() +
                   r.request_id.size() + r.user_agent.size() + r.referer.size();
  size_t old = o->size();
  o->resize(old + 1024 + ip.size() + 6 * strings);  // fixed parts: about 620 bytes at most
  char* p = o->data() + old;
  uint32_t want = t.fields;
  bool first = true;
  auto key = [&](int bit) {
    if (!(want & (1u << bit))) return false;
    const KeyText& k = kKeys[static_cast<size_t>(bit)];  // ,"name":
    memcpy(p, k.text, sizeof k.text);                    // room: see resize above
    if (first) *p = '{';
    first = false;
    p += k.len;
    return true;
  };
  auto lit = [&](std::string_view v) {
    if (v.empty()) return;  // an empty view may have no data pointer: memcpy must not see it
    memcpy(p, v.data(), v.size());
    p += v.size();
  };
  auto str = [&](std::string_view v) { p = json_str_raw(p, v); };
  auto quoted = [&](std::string_view v) {  // text px made or validated: nothing to escape
    *p++ = '"';
    lit(v);
    *p++ = '"';
  };
  auto dec = [&](uint64_t v) { p = dec_raw(p, v); };
  int b = 0;
  if (key(b++)) {
    *p++ = '"';
    lit(iso_prefix);
    *p++ = static_cast<char>('0' + millis / 100);
    *p++ = static_cast<char>('0' + millis / 10 % 10);
    *p++ = static_cast<char>('0' + millis % 10);
    lit("Z\"");
  }
  if (key(b++)) {
    *p++ = '"';
    lit(ip);
    *p++ = '"';
  }
  if (key(b++)) str(r.host);
  if (key(b++)) quoted(r.method);  // a method name from the codec's table
  if (key(b++)) str(r.target);
  if (key(b++)) dec(r.status);
  if (key(b++)) dec(r.bytes_in);
  if (key(b++)) dec(r.bytes_out);
  if (key(b++)) dec(r.duration_ms);
  if (key(b++)) quoted(r.route);  // route names are [A-Za-z0-9._-]
  if (key(b++)) dec(r.upstream_status);
  if (key(b++)) dec(r.attempts);
  if (key(b++)) {
    *p++ = '"';
    lit(termination_name(r.reason));
    *p++ = '"';
  }
  if (key(b++)) str(r.peer);  // may name a CA file path
  if (key(b++)) {
    if (r.tls) {
      lit("true,\"sni\":");
      str(r.sni);
    } else {
      lit("false");
    }
  }
  if (key(b++)) {
    *p++ = '{';
    bool one = true;
    for (int ph = 0; ph < lua::kPhases; ph++) {
      if (!r.phase_us[ph]) continue;
      if (!one) *p++ = ',';
      one = false;
      *p++ = '"';
      lit(lua::phase_name(ph));
      lit("\":");
      dec(r.phase_us[ph]);
    }
    if (r.wait_us) {
      if (!one) *p++ = ',';
      lit("\"wait\":");
      dec(r.wait_us);
    }
    *p++ = '}';
  }
  if (key(b++)) quoted(r.request_id);  // hex, or a trusted proxy's [A-Za-z0-9._-]
  if (key(b++)) str(r.user_agent);
  if (key(b++)) str(r.referer);
  if (key(b++)) lit(r.http_major == 2 ? "\"HTTP/2.0\"" : r.http_minor == 0 ? "\"HTTP/1.0\"" : "\"HTTP/1.1\"");
  if (key(b++)) lit(r.upstream_proto == 2 ? "\"HTTP/2.0\"" : r.upstream_proto == 1 ? "\"HTTP/1.1\"" : "null");
  // The cache stage's result and why a response was not stored (px's own words: nothing to escape).
  if (key(b++)) r.cache.empty() ? lit("null") : quoted(r.cache);
  if (key(b++)) r.cache_detail.empty() ? lit("null") : quoted(r.cache_detail);
  if (first) *p++ = '{';
  lit("}\n");
  o->resize(static_cast<size_t>(p - o->data()));
}

uint32_t access_log_field(std::string_view name) {
  for (int i = 0; i < kAccessLogFieldCount; i++)
    if (name == kAccessLogFields[i]) return 1u << i;
  return 0;
}

void AccessLogObserver::on_stream_end(const EndRecord& r) {
  if (r.quiet) return;  // the route turned its access log off
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != sec_) {
    sec_ = ts.tv_sec;
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    std::strftime(iso_, sizeof iso_, "%Y-%m-%dT%H:%M:%S.", &t);
    std::strftime(clf_, sizeof clf_, "%d/%b/%Y:%H:%M:%S +0000", &t);
  }
  if (ip_len_ == 0 || ip_.b != r.client.b) {
    ip_ = r.client;
    ip_len_ = static_cast<uint8_t>(r.client.format(ip_text_));
  }
  format_access_line(
      &buf_, r, log_->format(),
      {iso_, static_cast<int>(ts.tv_nsec / 1000000), clf_, std::string_view(ip_text_, ip_len_), log_->fields()});
  lines_++;
  if (buf_.size() >= 32 * 1024) flush();
}

void AccessLogObserver::flush() {
  if (buf_.empty()) return;
  bool kept = false;
  {
    std::lock_guard<std::mutex> g(slot_->mu);
    if (slot_->bytes + buf_.size() <= AccessLog::kSlotLimit) {
      slot_->bytes += buf_.size();
      slot_->pending.push_back(std::move(buf_));
      kept = true;
    }
  }
  if (!kept) slot_->dropped.fetch_add(lines_, std::memory_order_relaxed);
  buf_ = std::string();
  buf_.reserve(40 * 1024);
  lines_ = 0;
}

AccessLog::~AccessLog() { stop(); }

bool AccessLog::open(const std::string& path, AccessLogFormat f, std::string* error) {
  path_ = path;
  format_ = f;
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    *error = "access_log " + path + ": " + strerror(errno);
    return false;
  }
  return true;
}

AccessLog::Slot* AccessLog::add_slot() {
  slots_.push_back(std::make_unique<Slot>());
  return slots_.back().get();
}

void AccessLog::start() {
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

void AccessLog::reopen() {
  {
    std::lock_guard<std::mutex> g(mu_);
    reopen_ = true;
  }
  cv_.notify_one();
}

void AccessLog::stop() {
  if (!started_) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  started_ = false;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

uint64_t AccessLog::dropped() const {
  uint64_t n = 0;
  for (const auto& s : slots_) n += s->dropped.load(std::memory_order_relaxed);
  return n;
}

void AccessLog::run() {
  std::vector<std::string> batch;
  for (;;) {
    bool stopping, reopen;
    {
      std::unique_lock<std::mutex> g(mu_);
      cv_.wait_for(g, std::chrono::milliseconds(100), [this] { return stop_ || reopen_; });
      stopping = stop_;
      reopen = reopen_;
      reopen_ = false;
    }
    if (reopen) {
      int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      if (fd < 0) {
        PX_ERR("access_log %s: reopen: %s (still writing to the old file)", path_.c_str(), strerror(errno));
      } else {
        ::close(fd_);
        fd_ = fd;
      }
    }
    for (auto& s : slots_) {
      {
        std::lock_guard<std::mutex> g(s->mu);
        batch.swap(s->pending);
        s->bytes = 0;
      }
      for (const auto& b : batch) {
        size_t off = 0;
        while (off < b.size()) {
          ssize_t w = ::write(fd_, b.data() + off, b.size() - off);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            PX_WARN("access_log %s: %s", path_.c_str(), strerror(errno));
            break;
          }
          off += static_cast<size_t>(w);
        }
      }
      batch.clear();
    }
    if (stopping) return;
  }
}

}  // namespace px::proxy
