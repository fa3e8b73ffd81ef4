// px::proxy::Output — bytes on their way to one socket, batched so that a
// response head and its body leave in one writev.
//
// Pieces either point at memory the caller keeps valid until flush() (the
// worker's read buffer, during one read callback) or are copied into scratch.
// flush() first tries uv_try_write on all pieces at once; only what the kernel
// did not take is copied into a write request and queued with uv_write.
#pragma once
#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px::proxy {

class WriteOwner {
 public:
  // A queued write finished (status < 0: failed or cancelled by close).
  virtual void on_write_done(int status) = 0;

 protected:
  ~WriteOwner() = default;
};

class Output {
 public:
  void ref(const char* p, size_t n) {
    if (n) pieces_.push_back(Piece{p, static_cast<uint32_t>(n), 0});
  }
  void ref(std::string_view s) { ref(s.data(), s.size()); }
  void copy(const char* p, size_t n) {
    if (!n) return;
    size_t off = scratch_.size();
    scratch_.append(p, n);
    add_scratch(off, n);
  }
  void copy(std::string_view s) { copy(s.data(), s.size()); }
  // Appends to scratch through `s` (must be the scratch string returned by begin_scratch()).
  std::string& begin_scratch() {
    mark_ = scratch_.size();
    return scratch_;
  }
  void end_scratch() { add_scratch(mark_, scratch_.size() - mark_); }
  bool empty() const { return pieces_.empty(); }
  size_t size() const;
  void clear() {
    pieces_.clear();
    scratch_.clear();
  }
  // Writes everything (or queues the rest). Returns 0 or a libuv error code.
  int flush(uv_stream_t* s, WriteOwner* owner);

 private:
  struct Piece {
    const char* ptr;  // nullptr: in scratch at `off`
    uint32_t len;
    uint32_t off;
  };
  void add_scratch(size_t off, size_t n) {
    if (!n) return;
    if (!pieces_.empty() && pieces_.back().ptr == nullptr && pieces_.back().off + pieces_.back().len == off)
      pieces_.back().len += static_cast<uint32_t>(n);
    else
      pieces_.push_back(Piece{nullptr, static_cast<uint32_t>(n), static_cast<uint32_t>(off)});
  }
  std::vector<Piece> pieces_;
  std::string scratch_;
  size_t mark_ = 0;
};

// Frees this thread's cache of write requests (a worker calls it as it ends).
void release_write_cache();

}  // namespace px::proxy
