#include "proxy/output.h"

#include <cstring>

namespace px::proxy {

namespace {
struct WriteReq {
  uv_write_t req;
  WriteOwner* owner;
  WriteReq* next_free;
  std::string data;
};

// Write requests are recycled per thread: no malloc per queued write in steady state.
thread_local WriteReq* t_free = nullptr;
thread_local int t_free_count = 0;

WriteReq* get_req() {
  if (WriteReq* r = t_free) {
    t_free = r->next_free;
    t_free_count--;
    return r;
  }
  return new WriteReq();
}

void put_req(WriteReq* r) {
  if (t_free_count >= 256 || r->data.capacity() > 256 * 1024) {
    delete r;
    return;
  }
  r->data.clear();
  r->next_free = t_free;
  t_free = r;
  t_free_count++;
}

void on_written(uv_write_t* req, int status) {
  WriteReq* r = reinterpret_cast<WriteReq*>(req);
  WriteOwner* o = r->owner;
  put_req(r);
  o->on_write_done(status);
}
}  // namespace

void release_write_cache() {
  while (WriteReq* r = t_free) {
    t_free = r->next_free;
    delete r;
  }
  t_free_count = 0;
}

size_t Output::size() const {
  size_t n = 0;
  for (const auto& p : pieces_) n += p.len;
  return n;
}

int Output::flush(uv_stream_t* s, WriteOwner* owner) {
  if (pieces_.empty()) return 0;
  uv_buf_t stackbufs[64];
  std::vector<uv_buf_t> heapbufs;
  uv_buf_t* bufs = stackbufs;
  size_t n = pieces_.size();
  if (n > 64) {
    heapbufs.resize(n);
    bufs = heapbufs.data();
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const Piece& p = pieces_[i];
    bufs[i] = uv_buf_init(const_cast<char*>(p.ptr ? p.ptr : scratch_.data() + p.off), p.len);
    total += p.len;
  }
  size_t done = 0;
  if (s->write_queue_size == 0) {
    // uv_try_write takes at most IOV_MAX buffers; more than 64 is rare, send them in the queue.
    int r = uv_try_write(s, bufs, static_cast<unsigned>(n > 64 ? 64 : n));
    if (r >= 0) done = static_cast<size_t>(r);
    else if (r != UV_EAGAIN) {
      clear();
      return r;
    }
  }
  if (done == total) {
    clear();
    return 0;
  }
  WriteReq* wr = get_req();
  wr->owner = owner;
  wr->data.reserve(total - done);
  size_t skip = done;
  for (size_t i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    wr->data.append(bufs[i].base + skip, len - skip);
    skip = 0;
  }
  clear();
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  int r = uv_write(&wr->req, s, &b, 1, on_written);
  if (r != 0) {
    put_req(wr);
    return r;
  }
  return 0;
}

}  // namespace px::proxy
