// How much one nghttp2 server session holds: 1,000 sessions, each fed the client preface, SETTINGS and one GET,
// each answering it; then malloc'd bytes and RSS per session. What pxd cannot go below per idle HTTP/2
// connection while nghttp2 is its codec (bench/README.md, HTTP/2).
#include <malloc.h>
#include <nghttp2/nghttp2.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

size_t rss_bytes() {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return static_cast<size_t>(resident) * 4096;
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

}  // namespace

int main() {
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
    nghttp2_session_server_new(&s, cb, nullptr);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128}};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_session_mem_recv(s, kIn, sizeof kIn - 1);
    const uint8_t* out;
    while (nghttp2_session_mem_send(s, &out) > 0) {}
    sessions.push_back(s);
  }
  printf("per nghttp2 server session: %zu bytes malloc'd, %zu bytes of RSS\n",
         (mallinfo2().uordblks - heap0) / kSessions, (rss_bytes() - rss0) / kSessions);
  for (nghttp2_session* s : sessions) nghttp2_session_del(s);
  nghttp2_session_callbacks_del(cb);
  return 0;
}
