// How much one nghttp2 server session holds: 1,000 sessions, each fed the client preface, SETTINGS and one GET,
// each answering it; then malloc'd bytes and RSS per session. What pxd cannot go below per idle HTTP/2
// connection while nghttp2 is its codec (bench/README.md, HTTP/2).
//
//   build/bench/h2-session-rss            the whole session, as nghttp2 allocates it
//   build/bench/h2-session-rss --pxd      as pxd holds it while idle: the 16 KiB frame buffer page-aligned and its
//                                         pages given back (madvise), as H2Conn does after a second without a stream
// Both print the blocks one session keeps, by size.
#include <malloc.h>
#include <nghttp2/nghttp2.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace {

size_t rss_bytes() {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

ssize_t body(nghttp2_session*, int32_t, uint8_t* buf, size_t, uint32_t* flags, nghttp2_data_source*, void*) {
  memcpy(buf, "hello world\n", 12);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return 12;
}

int on_frame(nghttp2_session* s, const nghttp2_frame* f, void*) {
  if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    nghttp2_nv nv = {(uint8_t*)":status", (uint8_t*)"200", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider dp;
    dp.read_callback = body;
    nghttp2_submit_response(s, f->hd.stream_id, &nv, 1, &dp);
  }
  return 0;
}

// The allocator: every live block by size (for the first session), and pxd's frame-buffer placement.
struct Alloc {
  bool pxd = false, creating = false, record = false;
  std::map<void*, size_t> live;
  std::vector<std::pair<void*, size_t>> framebufs;
};
Alloc g;

void* mem_malloc(size_t n, void*) {
  void* p;
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (g.pxd && g.creating && n >= 16 * 1024) {
    size_t len = (n + page - 1) / page * page;
    p = aligned_alloc(page, len);
    g.framebufs.emplace_back(p, len);
  } else {
    p = malloc(n);
  }
  if (g.record && p) g.live[p] = n;
  return p;
}
void mem_free(void* p, void*) {
  if (g.record) g.live.erase(p);
  free(p);
}
void* mem_calloc(size_t n, size_t size, void* u) {
  void* p = mem_malloc(n * size, u);
  if (p) memset(p, 0, n * size);
  return p;
}
void* mem_realloc(void* p, size_t n, void* u) {
  if (!p) return mem_malloc(n, u);
  if (g.record) g.live.erase(p);
  void* q = realloc(p, n);
  if (g.record && q) g.live[q] = n;
  return q;
}
nghttp2_mem g_mem = {nullptr, mem_malloc, mem_free, mem_calloc, mem_realloc};

}  // namespace

int main(int argc, char** argv) {
  g.pxd = argc > 1 && strcmp(argv[1], "--pxd") == 0;
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
  // The preface, an empty SETTINGS, and HEADERS for GET https://localhost/ (static table entries, a literal).
  static const unsigned char kIn[] =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
      "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
      "\x00\x00\x0d\x01\x05\x00\x00\x00\x01\x82\x87\x84\x01\x09localhost";
  constexpr int kSessions = 1000;
  std::vector<nghttp2_session*> sessions;
  size_t heap0 = mallinfo2().uordblks, rss0 = rss_bytes();
  for (int i = 0; i < kSessions; i++) {
    nghttp2_session* s;
    g.record = i == 0;
    g.creating = true;
    nghttp2_session_server_new3(&s, cb, nullptr, nullptr, &g_mem);
    g.creating = false;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128}};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_session_mem_recv(s, kIn, sizeof kIn - 1);
    const uint8_t* out;
    while (nghttp2_session_mem_send(s, &out) > 0) {}
    if (i == 0) {
      std::map<size_t, int> sizes;
      size_t total = 0;
      for (auto& [p, n] : g.live) sizes[n]++, total += n;
      printf("one idle session keeps %zu blocks, %zu bytes:", g.live.size(), total);
      for (auto it = sizes.rbegin(); it != sizes.rend(); ++it)
        printf(" %zu%s", it->first, it->second > 1 ? "(x2+)" : "");
      printf("\n");
      g.record = false;
    }
    sessions.push_back(s);
  }
  if (g.pxd)
    for (auto& [p, len] : g.framebufs) madvise(p, len, MADV_DONTNEED);
  printf("per nghttp2 server session%s: %zu bytes malloc'd, %zu bytes of RSS\n",
         g.pxd ? " (frame buffer page-aligned, its pages given back)" : "", (mallinfo2().uordblks - heap0) / kSessions,
         (rss_bytes() - rss0) / kSessions);
  for (nghttp2_session* s : sessions) nghttp2_session_del(s);
  nghttp2_session_callbacks_del(cb);
  return 0;
}
