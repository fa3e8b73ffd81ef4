// px::proxy L4 streams — TCP and UDP relayed without looking inside
// (route/stream.h is what the store says; route::L4Stream what a snapshot serves).
//
//   L4Listener  one stream listening socket in one worker (TCP: accepts; UDP:
//               receives every client's datagrams and sends every reply)
//   L4Conn      one TCP client connection and its upstream attempt: bytes both
//               ways, each half-close passed on, each direction paused while
//               the other side's write queue is over net::kHighWater
//   UdpSession  one client address:port of a UDP stream, with its own
//               connected upstream socket and an idle timeout
//
// Both end in one place (l4_end) with one EndRecord (method "TCP" or "UDP",
// route = the stream's name) for the same observers as HTTP streams.
#pragma once
#include <uv.h>

#include <cstdint>
#include <string>
#include <unordered_map>

#include "net/cidr.h"
#include "net/epoll_transport.h"
#include "net/uv_transport.h"
#include "observe/end_record.h"
#include "route/snapshot.h"

namespace px::proxy {

class Worker;
struct SnapRef;
struct PeerState;
struct L4Conn;
struct UdpSession;

struct L4Listener {
  Worker* w = nullptr;
  std::string key;  // route::l4_listen_key()
  bool udp = false;
  bool closing = false;
  uv_poll_t tcp;  // one of the two is initialised (TCP: the listening socket, accepted from here)
  int fd = -1;
  uv_timer_t pause;  // TCP: accepting waits while descriptors run out
  int open = 0;      // handles to close
  uv_udp_t udph;
  // UDP: sessions by the client's address (its sockaddr bytes), and in order of last activity
  // (oldest first) so that expiry looks only at the head.
  std::unordered_map<std::string, UdpSession*> sessions;
  UdpSession* lru_head = nullptr;
  UdpSession* lru_tail = nullptr;
  uint64_t dropped = 0;      // datagrams that found no session slot or no peer
  sockaddr_storage local{};  // UDP: the bound address (a PROXY v2 header's destination)
};

// A worker's hold on the stream a connection started on: its SnapRef is counted until the end.
struct L4Pool {
  std::vector<PeerState*> peers;  // parallel to the stream's pool
  std::vector<int64_t> current;   // smooth weighted round robin
};

// Opens a listener on `fd` (owned from here on); false with the reason logged.
L4Listener* l4_listen(Worker* w, int fd, const std::string& key, bool udp);
// Stops accepting; open TCP connections go on, UDP sessions end (their replies left with the socket).
void l4_close_listener(L4Listener* l);
// pxd stops: every connection and session ends now.
void l4_close_conn(L4Conn* c);
// The worker tick: expire UDP sessions.
void l4_tick(L4Listener* l, uint64_t now);

// SNI passthrough: a TLS listener's connection whose ClientHello names a passthrough route goes on
// as an L4 connection of that route (`hello`: the bytes read so far, relayed first). false: no
// passthrough route for `sni` (the caller terminates TLS); true: taken (the caller closes its side).
bool l4_passthrough(Worker* w, int from, const net::IpAddr& client, std::string_view sni, std::string_view hello);

// PROXY protocol headers (exposed for the unit tests): src is the client, dst the address it connected to.
void proxy_v1(std::string* out, const sockaddr* src, const sockaddr* dst);
void proxy_v2(std::string* out, const sockaddr* src, const sockaddr* dst, bool udp);

}  // namespace px::proxy
