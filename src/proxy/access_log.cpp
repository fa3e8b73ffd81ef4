#include "proxy/access_log.h"

#include "lua/engine.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/log.h"

namespace px::proxy {

namespace {

void json_str(std::string* o, std::string_view s) {
  o->push_back('"');
  size_t run = 0;  // safe bytes not yet copied
  for (size_t i = 0; i < s.size(); i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      run++;
      continue;
    }
    o->append(s.data() + i - run, run);
    run = 0;
    if (c == '"' || c == '\\') {
      o->push_back('\\');
      o->push_back(static_cast<char>(c));
    } else {
      static const char* hex = "0123456789abcdef";
      char b[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      o->append(b, 6);
    }
  }
  o->append(s.data() + s.size() - run, run);
  o->push_back('"');
}

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

void num(std::string* o, uint64_t v) {
  char b[24];
  char* e = b + sizeof b;
  char* p = e;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  o->append(p, static_cast<size_t>(e - p));
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
    num(o, r.http_major);
    o->push_back('.');
    num(o, r.http_minor);
    o->append("\" ");
    num(o, r.status);
    o->push_back(' ');
    num(o, r.bytes_out);
    o->append(" \"");
    clf_str(o, r.referer);
    o->append("\" \"");
    clf_str(o, r.user_agent);
    o->append("\"\n");
    return;
  }
  char ms[4] = {static_cast<char>('0' + millis / 100), static_cast<char>('0' + millis / 10 % 10),
                static_cast<char>('0' + millis % 10), 'Z'};
  // Each field when access_log_fields keeps it, in kAccessLogFields order.
  uint32_t want = t.fields;
  bool first = true;
  auto key = [&](int bit) {
    if (!(want & (1u << bit))) return false;
    o->append(first ? "{\"" : ",\"");
    first = false;
    o->append(kAccessLogFields[bit]);
    o->append("\":");
    return true;
  };
  int b = 0;
  if (key(b++)) {
    o->push_back('"');
    o->append(iso_prefix);
    o->append(ms, 4);
    o->push_back('"');
  }
  if (key(b++)) {
    o->push_back('"');
    o->append(ip);
    o->push_back('"');
  }
  if (key(b++)) json_str(o, r.host);
  if (key(b++)) json_str(o, r.method);
  if (key(b++)) json_str(o, r.target);
  if (key(b++)) num(o, r.status);
  if (key(b++)) num(o, r.bytes_in);
  if (key(b++)) num(o, r.bytes_out);
  if (key(b++)) num(o, r.duration_ms);
  if (key(b++)) json_str(o, r.route);
  if (key(b++)) num(o, r.upstream_status);
  if (key(b++)) num(o, r.attempts);
  if (key(b++)) {
    o->push_back('"');
    o->append(termination_name(r.reason));
    o->push_back('"');
  }
  if (key(b++)) json_str(o, r.peer);
  if (key(b++)) {
    o->append(r.tls ? "true" : "false");
    if (r.tls) {
      o->append(",\"sni\":");
      json_str(o, r.sni);
    }
  }
  if (key(b++)) {
    o->push_back('{');
    bool one = true;
    for (int p = 0; p < lua::kPhases; p++) {
      if (!r.phase_us[p]) continue;
      if (!one) o->push_back(',');
      one = false;
      o->push_back('"');
      o->append(lua::phase_name(p));
      o->append("\":");
      num(o, r.phase_us[p]);
    }
    o->push_back('}');
  }
  if (key(b++)) json_str(o, r.request_id);
  if (key(b++)) json_str(o, r.user_agent);
  if (key(b++)) json_str(o, r.referer);
  o->append(first ? "{}\n" : "}\n");
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
