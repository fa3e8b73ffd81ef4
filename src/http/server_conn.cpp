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
  tcp.init(listener->loop);
  tcp.set_user(user);
  tr = &tcp;
  return tcp.accept(listener);
}

void ServerConn::adopt_socket(std::unique_ptr<net::SocketTransport> t, int fd, net::TransportUser* user) {
  sock = std::move(t);
  sock->set_user(user);
  sock->adopt(fd);
  tr = sock.get();
}

int ServerConn::fd() const {
  if (sock) return sock->fd();
  uv_os_fd_t fd;
  return uv_fileno(reinterpret_cast<const uv_handle_t*>(const_cast<net::UvTransport&>(tcp).stream()), &fd) == 0 ? fd
                                                                                                                : -1;
}

std::string ServerConn::peer_name(bool unix) {
  if (!unix) return tcp.peer_ip().str();
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
