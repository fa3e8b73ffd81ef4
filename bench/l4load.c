/* Load and peers for the L4 benchmark (bench/l4.py), built by it with cc -O2.
 *
 *   l4load tcp-server PORT                 echo: reads what comes, writes it back, closes on EOF
 *   l4load udp-server PORT                 echo for datagrams
 *   l4load conns PORT CONCURRENCY SECONDS  short connections: connect, 100 bytes each way, close
 *   l4load udp PORT SOCKETS SECONDS        100-byte datagrams, one in flight per socket
 *
 * The load modes print one number: completed connections (or answered datagrams) per second. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr_of(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int tcp_server(int port) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = addr_of(port);
  if (bind(l, (struct sockaddr*)&a, sizeof a) || listen(l, 4096)) return perror("listen"), 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  struct epoll_event evs[256];
  char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == l) {
        int c;
        while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        if (write(fd, buf, (size_t)r) < 0) close(fd);
      } else if (r == 0 || errno != EAGAIN) {
        close(fd);
      }
    }
  }
}

static int udp_server(int port) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = addr_of(port);
  if (bind(s, (struct sockaddr*)&a, sizeof a)) return perror("bind"), 1;
  char buf[65536];
  for (;;) {
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr*)&from, &len);
    if (r >= 0) sendto(s, buf, (size_t)r, 0, (struct sockaddr*)&from, len);
  }
}

struct slot {
  int fd;
  int got;
};

static void conn_open(int ep, struct slot* s, int port) {
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  s->got = 0;
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = addr_of(port);
  connect(s->fd, (struct sockaddr*)&a, sizeof a);
  struct epoll_event e = {.events = EPOLLOUT, .data.ptr = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &e);
}

static int conns(int port, int conc, double secs) {
  int ep = epoll_create1(0);
  struct slot* slots = calloc((size_t)conc, sizeof *slots);
  for (int i = 0; i < conc; i++) conn_open(ep, &slots[i], port);
  char msg[100], buf[4096];
  memset(msg, 'm', sizeof msg);
  long done = 0, failed = 0;
  double end = now_s() + secs, start = now_s();
  struct epoll_event evs[256];
  while (now_s() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      struct slot* s = evs[i].data.ptr;
      if (evs[i].events & EPOLLOUT) {
        if ((evs[i].events & (EPOLLERR | EPOLLHUP)) || write(s->fd, msg, sizeof msg) != sizeof msg) goto fail;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &e);
        continue;
      }
      ssize_t r = read(s->fd, buf, sizeof buf);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) goto fail;
      s->got += (int)r;
      if (s->got < 100) continue;
      done++;
      close(s->fd);
      conn_open(ep, s, port);
      continue;
    fail:
      failed++;
      close(s->fd);
      conn_open(ep, s, port);
    }
  }
  printf("%.0f %ld\n", (double)done / (now_s() - start), failed);
  return 0;
}

static int udp_load(int port, int nsock, double secs) {
  int ep = epoll_create1(0);
  int* fds = calloc((size_t)nsock, sizeof *fds);
  double* sent = calloc((size_t)nsock, sizeof *sent);
  char msg[100], buf[65536];
  memset(msg, 'u', sizeof msg);
  struct sockaddr_in a = addr_of(port);
  for (int i = 0; i < nsock; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    connect(fds[i], (struct sockaddr*)&a, sizeof a);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (unsigned)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
    send(fds[i], msg, sizeof msg, 0);
    sent[i] = now_s();
  }
  long answered = 0;
  double end = now_s() + secs, start = now_s(), last_check = start;
  struct epoll_event evs[256];
  while (now_s() < end) {
    int n = epoll_wait(ep, evs, 256, 20);
    for (int i = 0; i < n; i++) {
      int k = (int)evs[i].data.u32;
      while (recv(fds[k], buf, sizeof buf, 0) > 0) answered++;
      send(fds[k], msg, sizeof msg, 0);
      sent[k] = now_s();
    }
    double t = now_s();
    if (t - last_check > 0.05) {  // a lost datagram: send another
      last_check = t;
      for (int k = 0; k < nsock; k++)
        if (t - sent[k] > 0.2) {
          send(fds[k], msg, sizeof msg, 0);
          sent[k] = t;
        }
    }
  }
  printf("%.0f 0\n", (double)answered / (now_s() - start));
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 3 && !strcmp(argv[1], "tcp-server")) return tcp_server(atoi(argv[2]));
  if (argc >= 3 && !strcmp(argv[1], "udp-server")) return udp_server(atoi(argv[2]));
  if (argc >= 5 && !strcmp(argv[1], "conns")) return conns(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
  if (argc >= 5 && !strcmp(argv[1], "udp")) return udp_load(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
  fprintf(stderr, "usage: see the comment at the top of bench/l4load.c\n");
  return 2;
}
