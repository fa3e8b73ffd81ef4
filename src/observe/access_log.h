// px::proxy access logs — one line per stream, made from its end record
// (end_record.h) by an observer on each worker, written by one writer thread.
//
//   worker: EndRecord → line appended to the worker's buffer (no system call)
//           every 32 KiB or tick (≤ 100 ms): the buffer is handed to its slot
//   writer: every slot's buffers → write(2) to the file (O_APPEND)
//
// A slot is shared by one worker and the writer only (never between workers).
// When the disk is slower than the traffic, a slot holding over 8 MiB refuses
// more and the lines are counted as dropped: a request never waits for the
// log. SIGUSR1 reopens the file (logrotate).
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "observe/end_record.h"

namespace px::proxy {

enum class AccessLogFormat : uint8_t { json, combined };

// The JSON format's fields, in the order they are written (access_log_fields in pxd.conf picks some).
inline constexpr const char* kAccessLogFields[] = {
    "time",      "client",      "host",       "method",          "path",     "status",      "bytes_in",
    "bytes_out", "duration_ms", "route",      "upstream_status", "attempts", "termination", "peer",
    "tls",       "phases_us",   "request_id", "user_agent",      "referer",  "protocol",    "upstream_protocol",
    "cache",     "cache_detail"};
inline constexpr int kAccessLogFieldCount = sizeof kAccessLogFields / sizeof kAccessLogFields[0];
inline constexpr uint32_t kAccessLogAllFields = (1u << kAccessLogFieldCount) - 1;
// The bit of a field name, or 0 when there is no such field.
uint32_t access_log_field(std::string_view name);

class AccessLog {
 public:
  struct Slot {
    std::mutex mu;
    std::vector<std::string> pending;
    size_t bytes = 0;
    std::atomic<uint64_t> dropped{0};  // lines refused (the writer fell behind)
  };
  ~AccessLog();
  bool open(const std::string& path, AccessLogFormat f, std::string* error);
  void set_fields(uint32_t fields) { fields_ = fields ? fields : kAccessLogAllFields; }
  uint32_t fields() const { return fields_; }
  Slot* add_slot();  // before start(), one per worker
  void start();
  void reopen();  // from any thread: the writer reopens the file at its next turn
  void stop();    // writes what is pending, then ends the writer
  AccessLogFormat format() const { return format_; }
  uint64_t dropped() const;
  static constexpr size_t kSlotLimit = 8 * 1024 * 1024;

 private:
  void run();
  std::string path_;
  AccessLogFormat format_ = AccessLogFormat::json;
  uint32_t fields_ = kAccessLogAllFields;
  int fd_ = -1;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, reopen_ = false, started_ = false;
};

// The worker side: formats lines into a local buffer and hands it over.
class AccessLogObserver final : public EndObserver {
 public:
  AccessLogObserver(AccessLog* log, AccessLog::Slot* slot) : log_(log), slot_(slot) {}
  void on_stream_end(const EndRecord& r) override;
  void flush() override;

 private:
  AccessLog* log_;
  AccessLog::Slot* slot_;
  std::string buf_;
  size_t lines_ = 0;
  int64_t sec_ = -1;   // the second the cached time texts are for
  char iso_[32] = {};  // "2026-11-24T11:50:00."
  char clf_[40] = {};  // "24/Nov/2026:11:50:00 +0000"
  net::IpAddr ip_;     // the client the cached text is for (a keep-alive connection's lines share it)
  char ip_text_[46] = {};
  uint8_t ip_len_ = 0;
};

// One line, as written (exposed for the unit tests).
// What a line needs besides the record, kept by the observer across lines: the time texts (per second)
// and the client's address text (per address).
struct LineTexts {
  const char* iso_prefix;  // "2026-11-24T11:50:00."
  int millis;
  const char* clf_time;                   // "24/Nov/2026:11:50:00 +0000"
  std::string_view client;                // r.client as text
  uint32_t fields = kAccessLogAllFields;  // JSON: which fields (bits in kAccessLogFields order)
};
void format_access_line(std::string* out, const EndRecord& r, AccessLogFormat f, const LineTexts& t);

}  // namespace px::proxy
