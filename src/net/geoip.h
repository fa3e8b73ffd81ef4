// px::net geoip — a MaxMind DB (GeoIP2/GeoLite2 Country, City or ASN, or any database in that format) opened
// by one worker: its own memory map, so that lookups take no lock. refresh() reopens the file when it changed
// (the worker's tick, once a second); a file that fails to open keeps the previous one serving.
#pragma once
#include <maxminddb.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>

#include "net/cidr.h"

namespace px::net {

class GeoDb {
 public:
  GeoDb() = default;
  GeoDb(const GeoDb&) = delete;
  GeoDb& operator=(const GeoDb&) = delete;
  ~GeoDb() { close(); }
  // Opens path (or, when it is already open and unchanged, does nothing). false: *error says why, and what
  // was open stays.
  bool refresh(const std::string& path, std::string* error, bool* reopened = nullptr);
  bool is_open() const { return open_; }
  // The ISO 3166 country code of ip ("DE"), or "" when the database has none for it.
  std::string country(const IpAddr& ip) const;
  // The autonomous system number of ip, or 0.
  uint32_t asn(const IpAddr& ip) const;
  void close();

 private:
  bool lookup(const IpAddr& ip, MMDB_lookup_result_s* out) const;
  MMDB_s db_{};
  bool open_ = false;
  std::string path_;
  struct timespec mtime_ {};
  ino_t ino_ = 0;
  off_t size_ = 0;
};

// A worker's two databases (country, AS number) and a cache of the last lookups, keyed by address: a
// keep-alive connection's requests, and a returning client's, find their answer without walking the database
// again. A database reopened empties the cache.
class Geo {
 public:
  struct Info {
    char country[3] = {};  // "" when unknown
    uint32_t asn = 0;      // 0 when unknown
  };
  // Opens or reopens what changed; false: *error says why (what was open stays).
  bool refresh(const std::string& country_path, const std::string& asn_path, std::string* error);
  const Info& lookup(const IpAddr& ip);

 private:
  struct Entry {
    IpAddr ip;
    uint32_t gen = 0;  // 0: empty
    Info info;
  };
  static constexpr size_t kSlots = 1024;
  GeoDb country_, asn_;
  uint32_t gen_ = 1;
  std::array<Entry, kSlots> cache_{};
};

}  // namespace px::net
