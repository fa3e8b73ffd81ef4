#include "http/server_conn.h"

#include <sys/socket.h>

namespace px::http {

int ServerConn::accept_from(uv_stream_t* listener, net::TransportUser* user, bool unix) {
  if (unix) {
    auto* pipe = new net::UvPipeTransport();
    wrap.reset(pipe);
    pipe->init(listener->loop);
    pipe->set_user(user);
    tr = pipe;
    return pipe->accept(listener);
  }
  sock.uv.init(listener->loop);
  sock.uv.set_user(user);
  tr = &sock.uv;
  return sock.uv.accept(listener);
}

void ServerConn::adopt_ring(net::UringSet* set, int fd, net::TransportUser* user) {
  net::UringTransport* t = sock.make_ring();
  t->init(set);
  t->set_user(user);
  t->adopt(fd);
  tr = t;
}

int ServerConn::fd() const {
  if (sock.on_ring) return sock.ring.fd();
  uv_os_fd_t fd;
  return uv_fileno(reinterpret_cast<const uv_handle_t*>(const_cast<net::UvTransport&>(sock.uv).stream()), &fd) == 0
             ? fd
             : -1;
}

std::string ServerConn::peer_name(bool unix) {
  if (!unix && sock.on_ring) {
    sockaddr_storage sa;
    socklen_t len = sizeof sa;
    return getpeername(sock.ring.fd(), reinterpret_cast<sockaddr*>(&sa), &len) == 0
               ? net::IpAddr::from_sockaddr(reinterpret_cast<sockaddr*>(&sa)).str()
               : std::string("?");
  }
  if (!unix) return sock.uv.peer_ip().str();
  auto* pipe = static_cast<net::UvPipeTransport*>(wrap.get());
  uv_os_fd_t fd;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(pipe->stream()), &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
    return "uid:" + std::to_string(cred.uid);
  return "uid:?";
}

}  // namespace px::http
