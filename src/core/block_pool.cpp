#include "core/block_pool.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace px::block_pool {

namespace {
constexpr size_t kHeader = 16;
constexpr size_t kGrain = 16;
constexpr size_t kClasses = kMaxBlock / kGrain;  // class c holds (c * 16, (c + 1) * 16] bytes; c = kClasses: malloc's

struct Free {
  Free* next;
};
constinit thread_local Free* t_lists[kClasses] = {};
constinit thread_local size_t t_cached = 0;

size_t class_of(size_t size) { return size == 0 ? 0 : (size - 1) / kGrain; }
size_t capacity_of(size_t c) { return (c + 1) * kGrain; }
uint32_t& header_of(void* p) { return *reinterpret_cast<uint32_t*>(static_cast<char*>(p) - kHeader); }
}  // namespace

void* alloc(size_t size) {
  size_t c = size > kMaxBlock ? kClasses : class_of(size);
  if (c < kClasses) {
    if (Free* f = t_lists[c]) {
      t_lists[c] = f->next;
      t_cached -= capacity_of(c);
      return f;
    }
  }
  if (size > SIZE_MAX - kHeader) return nullptr;
  char* raw = static_cast<char*>(std::malloc(kHeader + (c < kClasses ? capacity_of(c) : size)));
  if (!raw) return nullptr;
  *reinterpret_cast<uint32_t*>(raw) = static_cast<uint32_t>(c);
  return raw + kHeader;
}

void* alloc_zeroed(size_t n, size_t size) {
  if (size && n > SIZE_MAX / size) return nullptr;
  void* p = alloc(n * size);
  if (p) std::memset(p, 0, n * size);
  return p;
}

void free(void* p) {
  if (!p) return;
  size_t c = header_of(p);
  if (c < kClasses && t_cached + capacity_of(c) <= kMaxCached) {
    Free* f = static_cast<Free*>(p);
    f->next = t_lists[c];
    t_lists[c] = f;
    t_cached += capacity_of(c);
    return;
  }
  std::free(static_cast<char*>(p) - kHeader);
}

void* realloc(void* p, size_t size) {
  if (!p) return alloc(size);
  size_t c = header_of(p);
  if (c < kClasses && size <= capacity_of(c)) return p;
  if (c == kClasses) {
    if (size > SIZE_MAX - kHeader) return nullptr;
    char* raw = static_cast<char*>(std::realloc(static_cast<char*>(p) - kHeader, kHeader + size));
    return raw ? raw + kHeader : nullptr;
  }
  void* q = alloc(size);
  if (!q) return nullptr;
  std::memcpy(q, p, capacity_of(c));  // size > the old capacity
  free(p);
  return q;
}

void release() {
  for (auto& head : t_lists)
    while (Free* f = head) {
      head = f->next;
      std::free(reinterpret_cast<char*>(f) - kHeader);
    }
  t_cached = 0;
}

}  // namespace px::block_pool
