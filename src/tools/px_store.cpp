// px-store — writes routes into a px store directly, through the store
// library. A test and demo helper until pxadmind (the real, only writer) takes
// over; it validates routes exactly as pxadmind will.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "admin/model.h"
#include "route/route.h"
#include "route/stream.h"
#include "store/store.h"
#include "tls/cert.h"

using px::store::Store;

static int usage() {
  std::fprintf(stderr,
               "usage: px-store --data DIR COMMAND\n"
               "  put [FILE|-]          add or replace a route (JSON; '-' or nothing = stdin)\n"
               "  put-json JSON         the same, JSON given as an argument\n"
               "  rm NAME               remove a route\n"
               "  list                  print every route, one JSON per line\n"
               "  generation            print the store generation\n"
               "  bump [N]              N write transactions that only bump the generation\n"
               "  flip N JSON_A JSON_B  N writes alternating between two versions of a route\n"
               "  put-many [FILE|-]     one route JSON per line, all in one write transaction\n"
               "  put-acl JSON          add or replace an access list (validated as pxadmind does)\n"
               "  put-stream JSON       add or replace an L4 stream (its own checks only: no conflicts)\n"
               "  put-cert NAME CERT KEY  add or replace a certificate (PEM files, checked as pxadmind does)\n"
               "  rm-cert NAME          remove a certificate\n");
  return 2;
}

static int put(Store& st, const std::string& text) {
  px::route::RouteSpec r;
  std::string err;
  if (!px::route::parse_route_json(text, &r, &err)) {
    std::fprintf(stderr, "px-store: invalid route: %s\n", err.c_str());
    return 2;
  }
  std::string value = px::route::route_to_json(r);
  uint64_t gen;
  if (!st.write([&](Store::Writer& w, std::string* e) { return w.put(px::store::keys::route(r.name), value, e); }, &gen,
                &err)) {
    std::fprintf(stderr, "px-store: %s\n", err.c_str());
    return 1;
  }
  std::printf("%llu\n", static_cast<unsigned long long>(gen));
  return 0;
}

int main(int argc, char** argv) {
  std::string dir;
  int i = 1;
  if (i + 1 < argc && std::strcmp(argv[i], "--data") == 0) {
    dir = argv[i + 1];
    i += 2;
  }
  if (dir.empty() || i >= argc) return usage();
  std::string cmd = argv[i++];
  Store st;
  std::string err;
  if (!st.open(dir, false, &err)) {
    std::fprintf(stderr, "px-store: %s\n", err.c_str());
    return 1;
  }
  if (cmd == "put") {
    std::stringstream ss;
    if (i < argc && std::strcmp(argv[i], "-") != 0) {
      FILE* f = std::fopen(argv[i], "rb");
      if (!f) {
        std::fprintf(stderr, "px-store: %s: %s\n", argv[i], std::strerror(errno));
        return 1;
      }
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) ss.write(buf, static_cast<std::streamsize>(n));
      std::fclose(f);
    } else {
      ss << std::cin.rdbuf();
    }
    return put(st, ss.str());
  }
  if (cmd == "put-json" && i < argc) return put(st, argv[i]);
  if (cmd == "rm" && i < argc) {
    std::string key = px::store::keys::route(argv[i]);
    bool found = false;
    uint64_t gen;
    if (!st.write(
            [&](Store::Writer& w, std::string* e) {
              std::string v;
              if (!w.get(key, &v, &found, e)) return false;
              if (!found) {
                *e = std::string("no route named '") + argv[i] + "'";
                return false;
              }
              return w.del(key, e);
            },
            &gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return found ? 1 : 3;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "list") {
    uint64_t gen;
    if (!st.scan(
            px::store::keys::kRoute, &gen,
            [](std::string_view, std::string_view v) {
              std::fwrite(v.data(), 1, v.size(), stdout);
              std::fputc('\n', stdout);
            },
            &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    return 0;
  }
  if (cmd == "generation") {
    uint64_t gen;
    if (!st.generation(&gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "bump") {
    long n = i < argc ? std::atol(argv[i]) : 1;
    uint64_t gen = 0;
    for (long k = 0; k < n; k++)
      if (!st.write([](Store::Writer&, std::string*) { return true; }, &gen, &err)) {
        std::fprintf(stderr, "px-store: %s\n", err.c_str());
        return 1;
      }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "put-acl" && i < argc) {
    nlohmann::json in = nlohmann::json::parse(argv[i], nullptr, false), out;
    if (!px::admin::parse_acl_json(in, &out, &err)) {
      std::fprintf(stderr, "px-store: invalid acl: %s\n", err.c_str());
      return 2;
    }
    out["version"] = 1;
    uint64_t gen;
    if (!st.write(
            [&](Store::Writer& w, std::string* e) {
              return w.put(px::store::keys::acl(out["name"].get<std::string>()), out.dump(), e);
            },
            &gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "put-stream" && i < argc) {
    px::route::StreamSpec sp;
    if (!px::route::parse_stream_json(argv[i], &sp, &err)) {
      std::fprintf(stderr, "px-store: invalid stream: %s\n", err.c_str());
      return 2;
    }
    uint64_t gen;
    if (!st.write(
            [&](Store::Writer& w, std::string* e) {
              return w.put(std::string(px::store::keys::kStream) + sp.name, px::route::stream_to_json(sp), e);
            },
            &gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "put-many") {
    std::istream* in = &std::cin;
    std::ifstream f;
    if (i < argc && std::strcmp(argv[i], "-") != 0) {
      f.open(argv[i]);
      if (!f) {
        std::fprintf(stderr, "px-store: %s: %s\n", argv[i], std::strerror(errno));
        return 1;
      }
      in = &f;
    }
    std::vector<std::pair<std::string, std::string>> items;
    std::string line;
    int n = 0;
    while (std::getline(*in, line)) {
      n++;
      if (line.empty()) continue;
      px::route::RouteSpec r;
      if (!px::route::parse_route_json(line, &r, &err)) {
        std::fprintf(stderr, "px-store: line %d: invalid route: %s\n", n, err.c_str());
        return 2;
      }
      items.emplace_back(px::store::keys::route(r.name), px::route::route_to_json(r));
    }
    uint64_t gen;
    if (!st.write(
            [&](Store::Writer& w, std::string* e) {
              for (const auto& [k, v] : items)
                if (!w.put(k, v, e)) return false;
              return true;
            },
            &gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if ((cmd == "put-cert" && i + 2 < argc) || (cmd == "rm-cert" && i < argc)) {
    std::string name = argv[i];
    std::string value;
    if (cmd == "put-cert") {
      std::string pem[2];
      for (int k = 0; k < 2; k++) {
        std::ifstream f(argv[i + 1 + k], std::ios::binary);
        if (!f) {
          std::fprintf(stderr, "px-store: %s: %s\n", argv[i + 1 + k], std::strerror(errno));
          return 1;
        }
        std::stringstream ss;
        ss << f.rdbuf();
        pem[k] = ss.str();
      }
      px::tls::Cert c;
      c.name = name;
      if (!px::tls::parse_cert(pem[0], pem[1], static_cast<int64_t>(time(nullptr)), &c, &err)) {
        std::fprintf(stderr, "px-store: %s\n", err.c_str());
        return 2;
      }
      value = px::tls::cert_record(c, pem[0], pem[1], "custom");
    }
    uint64_t gen = 0;
    if (!st.write(
            [&](Store::Writer& w, std::string* e) {
              return value.empty() ? w.del(px::store::keys::cert(name), e)
                                   : w.put(px::store::keys::cert(name), value, e);
            },
            &gen, &err)) {
      std::fprintf(stderr, "px-store: %s\n", err.c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  if (cmd == "flip" && i + 2 < argc) {
    long n = std::atol(argv[i]);
    std::string values[2];
    for (int k = 0; k < 2; k++) {
      px::route::RouteSpec r;
      if (!px::route::parse_route_json(argv[i + 1 + k], &r, &err)) {
        std::fprintf(stderr, "px-store: invalid route: %s\n", err.c_str());
        return 2;
      }
      values[k] = px::route::route_to_json(r);
    }
    px::route::RouteSpec a;
    px::route::parse_route_json(values[0], &a, &err);
    uint64_t gen = 0;
    for (long k = 0; k < n; k++)
      if (!st.write(
              [&](Store::Writer& w, std::string* e) { return w.put(px::store::keys::route(a.name), values[k % 2], e); },
              &gen, &err)) {
        std::fprintf(stderr, "px-store: %s\n", err.c_str());
        return 1;
      }
    std::printf("%llu\n", static_cast<unsigned long long>(gen));
    return 0;
  }
  return usage();
}
