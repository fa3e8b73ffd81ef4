// px::net::Output — a chain of buffers on its way to a transport, batched so
// that a response head and its body leave in one writev.
//
// Pieces either point at memory the caller keeps valid until the transport's
// write() (the read buffer, during one read callback) or are copied into
// scratch. Transport::write takes them all and clears the chain.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace px::net {

class Output {
 public:
  struct Piece {
    const char* ptr;  // nullptr: in scratch at `off`
    uint32_t len;
    uint32_t off;
  };
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
  void swap(Output& o) {
    pieces_.swap(o.pieces_);
    scratch_.swap(o.scratch_);
    std::swap(mark_, o.mark_);
  }
  // For transports: the pieces and where each one's bytes are.
  size_t count() const { return pieces_.size(); }
  const char* data(size_t i) const { return pieces_[i].ptr ? pieces_[i].ptr : scratch_.data() + pieces_[i].off; }
  size_t len(size_t i) const { return pieces_[i].len; }

 private:
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

}  // namespace px::net
