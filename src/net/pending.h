// px::net::Pending — bytes a connection read but has not parsed yet.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace px::net {

// Bytes a connection read but has not parsed yet (pipelined requests, tunnel data
// that arrived early). Usually there are none: the buffer exists only while
// needed, so an idle connection pays one pointer for it.
class Pending {
 public:
  bool empty() const { return !s_ || s_->empty(); }
  size_t size() const { return s_ ? s_->size() : 0; }
  const char* data() const { return s_->data(); }
  void append(const char* p, size_t n) {
    if (!s_) s_ = std::make_unique<std::string>();
    s_->append(p, n);
  }
  void erase_front(size_t n) { s_->erase(0, n); }
  void clear() { s_.reset(); }  // and free the buffer
  std::string_view view() const { return s_ ? std::string_view(*s_) : std::string_view(); }

 private:
  std::unique_ptr<std::string> s_;
};

}  // namespace px::net
