// px::FreeList<T> — recycled objects, per thread: a codec's per-request state
// (H1Exchange, UpstreamRequest) is taken as a request starts and given back as
// it ends, keeping its buffers' capacity. T has a `T* next_free`. The list is
// constinit thread-local data (no TLS guard or wrapper on the hot path) and is
// emptied with drain() as the thread's loop ends.
#pragma once
#include <cstddef>

namespace px {

template <class T, size_t Max = 256>
class FreeList {
 public:
  static T* take() {
    T* x = head_;
    if (!x) return new T();
    head_ = x->next_free;
    count_--;
    x->next_free = nullptr;
    return x;
  }
  // `keep`: the object is worth keeping (its buffers are not oversized).
  static void give(T* x, bool keep = true) {
    if (!keep || count_ >= Max) {
      delete x;
      return;
    }
    x->next_free = head_;
    head_ = x;
    count_++;
  }
  static void drain() {
    while (T* x = head_) {
      head_ = x->next_free;
      delete x;
    }
    count_ = 0;
  }

 private:
  static inline constinit thread_local T* head_ = nullptr;
  static inline constinit thread_local size_t count_ = 0;
};

}  // namespace px
