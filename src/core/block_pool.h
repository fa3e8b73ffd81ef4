// px::BlockPool — recycled memory blocks, per thread, for a C library that takes an allocator (nghttp2's
// nghttp2_mem). nghttp2 mallocs and frees a few small objects per HTTP/2 stream (the stream, its outbound
// frames, their header copies); with 100 streams in flight on a connection that is more blocks of one
// size than glibc's per-thread cache keeps, and every stream went through malloc's slow path. Here a
// block of up to kMaxBlock bytes goes back to its size class's list on this thread and is taken from it
// again: a few instructions each way. Larger blocks are malloc's.
//
// Each block carries a 16-byte header (its class), so the memory stays aligned as malloc's. A thread keeps
// at most kMaxCached bytes on its lists (what is freed past that goes back to malloc), and release()
// empties them as the thread's loop ends.
#pragma once
#include <cstddef>

namespace px::block_pool {

inline constexpr size_t kMaxBlock = 1024;      // the largest size kept on a list
inline constexpr size_t kMaxCached = 1 << 20;  // per thread

void* alloc(size_t size);
void* alloc_zeroed(size_t n, size_t size);
void* realloc(void* p, size_t size);
void free(void* p);
// Gives this thread's cached blocks back to malloc.
void release();

}  // namespace px::block_pool
