#include "acme/dns.h"

#include <openssl/rand.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/strings.h"

namespace px::acme {

void run_hook(uv_loop_t* loop, const std::string& hook, const std::vector<std::string>& args, uint64_t timeout_ms,
              std::function<void(std::string)> done) {
  struct Run {
    uv_process_t proc{};
    uv_timer_t timer{};
    std::function<void(std::string)> done;
    std::string error;
    bool exited = false;
    int closes = 2;
    void release() {
      if (--closes == 0) {
        auto d = std::move(done);
        std::string e = error;
        delete this;
        d(e);
      }
    }
  };
  auto* r = new Run();
  r->done = std::move(done);
  std::vector<std::string> all = {hook};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 2;  // the hook's output goes to pxadmind's log stream
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t opt{};
  opt.file = hook.c_str();
  opt.args = argv.data();
  opt.stdio = stdio;
  opt.stdio_count = 3;
  opt.exit_cb = [](uv_process_t* p, int64_t status, int sig) {
    auto* r = static_cast<Run*>(p->data);
    r->exited = true;
    if (sig)
      r->error = "dns_hook was killed by signal " + std::to_string(sig);
    else if (status)
      r->error = "dns_hook exited with status " + std::to_string(status);
    uv_timer_stop(&r->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { static_cast<Run*>(h->data)->release(); });
    uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), [](uv_handle_t* h) { static_cast<Run*>(h->data)->release(); });
  };
  r->proc.data = r;
  r->timer.data = r;
  uv_timer_init(loop, &r->timer);
  int e = uv_spawn(loop, &r->proc, &opt);
  if (e != 0) {
    r->error = "dns_hook " + hook + ": " + uv_strerror(e);
    r->closes = 2;
    uv_close(reinterpret_cast<uv_handle_t*>(&r->proc), [](uv_handle_t* h) { static_cast<Run*>(h->data)->release(); });
    uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), [](uv_handle_t* h) { static_cast<Run*>(h->data)->release(); });
    return;
  }
  uv_timer_start(
      &r->timer,
      [](uv_timer_t* t) {
        auto* r = static_cast<Run*>(t->data);
        if (r->exited) return;
        r->error = "dns_hook did not finish in time (killed)";
        uv_process_kill(&r->proc, SIGKILL);
      },
      timeout_ms, 0);
}

std::string build_txt_query(uint16_t id, const std::string& fqdn) {
  std::string m;
  m.push_back(static_cast<char>(id >> 8));
  m.push_back(static_cast<char>(id & 0xff));
  m += std::string("\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 10);  // RD; one question
  size_t i = 0;
  std::string name = fqdn;
  if (!name.empty() && name.back() == '.') name.pop_back();
  while (i <= name.size() && !name.empty()) {
    size_t dot = name.find('.', i);
    if (dot == std::string::npos) dot = name.size();
    m.push_back(static_cast<char>(dot - i));
    m.append(name, i, dot - i);
    i = dot + 1;
  }
  m.push_back('\0');
  m += std::string("\x00\x10\x00\x01", 4);  // TXT, IN
  return m;
}

namespace {
// Skips a (possibly compressed) name at *p; false when it runs off the message.
bool skip_name(const std::string& m, size_t* p) {
  for (int guard = 0; guard < 128; guard++) {
    if (*p >= m.size()) return false;
    uint8_t len = static_cast<uint8_t>(m[*p]);
    if (len == 0) {
      (*p)++;
      return true;
    }
    if ((len & 0xc0) == 0xc0) {
      *p += 2;
      return *p <= m.size();
    }
    *p += 1 + len;
  }
  return false;
}
uint16_t u16(const std::string& m, size_t p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(m[p]) << 8) | static_cast<uint8_t>(m[p + 1]));
}
}  // namespace

bool parse_txt_answer(const std::string& m, uint16_t id, std::vector<std::string>* values, std::string* error) {
  if (m.size() < 12 || u16(m, 0) != id || !(static_cast<uint8_t>(m[2]) & 0x80)) {
    *error = "not an answer to our query";
    return false;
  }
  int rcode = static_cast<uint8_t>(m[3]) & 0x0f;
  if (rcode == 3) return true;  // NXDOMAIN: no records (yet)
  if (rcode != 0) {
    *error = "the resolver answered rcode " + std::to_string(rcode);
    return false;
  }
  uint16_t qd = u16(m, 4), an = u16(m, 6);
  size_t p = 12;
  for (uint16_t i = 0; i < qd; i++) {
    if (!skip_name(m, &p) || p + 4 > m.size()) goto bad;
    p += 4;
  }
  for (uint16_t i = 0; i < an; i++) {
    if (!skip_name(m, &p) || p + 10 > m.size()) goto bad;
    uint16_t type = u16(m, p), rdlen = u16(m, p + 8);
    p += 10;
    if (p + rdlen > m.size()) goto bad;
    if (type == 16) {
      std::string v;
      size_t q = p;
      while (q < p + rdlen) {
        size_t n = static_cast<uint8_t>(m[q]);
        if (q + 1 + n > p + rdlen) goto bad;
        v.append(m, q + 1, n);
        q += 1 + n;
      }
      values->push_back(v);
    }
    p += rdlen;
  }
  return true;
bad:
  *error = "a malformed DNS answer";
  return false;
}

void query_txt(uv_loop_t* loop, const std::string& server, const std::string& fqdn, uint64_t timeout_ms,
               std::function<void(std::vector<std::string>, std::string)> done) {
  struct Q {
    uv_udp_t udp{};
    uv_timer_t timer{};
    uv_udp_send_t send{};
    std::string msg;
    uint16_t id = 0;
    std::function<void(std::vector<std::string>, std::string)> done;
    std::vector<std::string> values;
    std::string error;
    bool finished = false;
    int closes = 2;
    void finish(std::string err) {
      if (finished) return;
      finished = true;
      error = std::move(err);
      uv_udp_recv_stop(&udp);
      uv_close(reinterpret_cast<uv_handle_t*>(&udp), [](uv_handle_t* h) { static_cast<Q*>(h->data)->release(); });
      uv_close(reinterpret_cast<uv_handle_t*>(&timer), [](uv_handle_t* h) { static_cast<Q*>(h->data)->release(); });
    }
    void release() {
      if (--closes) return;
      auto d = std::move(done);
      auto v = std::move(values);
      std::string e = error;
      delete this;
      d(std::move(v), e);
    }
  };
  auto* q = new Q();
  q->done = std::move(done);
  RAND_bytes(reinterpret_cast<uint8_t*>(&q->id), sizeof q->id);
  q->msg = build_txt_query(q->id, fqdn);
  q->udp.data = q;
  q->timer.data = q;
  uv_udp_init(loop, &q->udp);
  uv_timer_init(loop, &q->timer);
  sockaddr_storage ss{};
  std::string host = server;
  int port = 53;
  if (!server.empty() && server.front() == '[') {
    size_t close = server.find(']');
    host = server.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (close != std::string::npos && close + 1 < server.size() && server[close + 1] == ':')
      port = std::atoi(server.c_str() + close + 2);
  } else if (std::count(server.begin(), server.end(), ':') == 1) {
    size_t colon = server.find(':');
    host = server.substr(0, colon);
    port = std::atoi(server.c_str() + colon + 1);
  }
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
    q->finish("resolver '" + server + "' is not a numeric address");
    return;
  }
  uv_buf_t b = uv_buf_init(q->msg.data(), static_cast<unsigned>(q->msg.size()));
  int r = uv_udp_send(&q->send, &q->udp, &b, 1, reinterpret_cast<sockaddr*>(&ss), nullptr);
  if (r != 0) {
    q->finish(std::string("send to ") + server + ": " + uv_strerror(r));
    return;
  }
  uv_udp_recv_start(
      &q->udp,
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char space[4096];
        *buf = uv_buf_init(space, sizeof space);
      },
      [](uv_udp_t* u, ssize_t n, const uv_buf_t* buf, const sockaddr*, unsigned) {
        auto* q = static_cast<Q*>(u->data);
        if (q->finished || n == 0) return;
        if (n < 0) return q->finish(uv_strerror(static_cast<int>(n)));
        std::string err;
        std::vector<std::string> v;
        if (!parse_txt_answer(std::string(buf->base, static_cast<size_t>(n)), q->id, &v, &err)) {
          if (err == "not an answer to our query") return;  // someone else's datagram: keep waiting
          return q->finish(err);
        }
        q->values = std::move(v);
        q->finish("");
      });
  uv_timer_start(
      &q->timer, [](uv_timer_t* t) { static_cast<Q*>(t->data)->finish("the resolver did not answer"); }, timeout_ms, 0);
}

std::string system_resolver() {
  std::ifstream in("/etc/resolv.conf");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string k, v;
    ls >> k >> v;
    if (k == "nameserver" && !v.empty()) return v.find(':') != std::string::npos ? "[" + v + "]:53" : v + ":53";
  }
  return "127.0.0.1:53";
}

}  // namespace px::acme
