#include "net/geoip.h"

#include <netinet/in.h>
#include <sys/stat.h>

#include <cstring>

namespace px::net {

bool GeoDb::refresh(const std::string& path, std::string* error, bool* reopened) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    *error = path + ": " + std::strerror(errno);
    return false;
  }
  if (open_ && path == path_ && st.st_ino == ino_ && st.st_size == size_ && st.st_mtim.tv_sec == mtime_.tv_sec &&
      st.st_mtim.tv_nsec == mtime_.tv_nsec)
    return true;
  MMDB_s next{};
  int rc = MMDB_open(path.c_str(), MMDB_MODE_MMAP, &next);
  if (rc != MMDB_SUCCESS) {
    *error = path + ": " + MMDB_strerror(rc);
    return false;
  }
  close();
  db_ = next;
  open_ = true;
  if (reopened) *reopened = true;
  path_ = path;
  mtime_ = st.st_mtim;
  ino_ = st.st_ino;
  size_ = st.st_size;
  return true;
}

void GeoDb::close() {
  if (open_) MMDB_close(&db_);
  open_ = false;
}

bool GeoDb::lookup(const IpAddr& ip, MMDB_lookup_result_s* out) const {
  if (!open_) return false;
  sockaddr_storage ss{};
  if (ip.is_v4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    std::memcpy(&sin->sin_addr, ip.b.data() + 12, 4);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    std::memcpy(&sin6->sin6_addr, ip.b.data(), 16);
  }
  int rc = MMDB_SUCCESS;
  *out = MMDB_lookup_sockaddr(const_cast<MMDB_s*>(&db_), reinterpret_cast<const sockaddr*>(&ss), &rc);
  return rc == MMDB_SUCCESS && out->found_entry;
}

std::string GeoDb::country(const IpAddr& ip) const {
  MMDB_lookup_result_s r;
  if (!lookup(ip, &r)) return {};
  MMDB_entry_data_s d;
  if (MMDB_get_value(&r.entry, &d, "country", "iso_code", nullptr) != MMDB_SUCCESS || !d.has_data ||
      d.type != MMDB_DATA_TYPE_UTF8_STRING)
    return {};
  return std::string(d.utf8_string, d.data_size);
}

uint32_t GeoDb::asn(const IpAddr& ip) const {
  MMDB_lookup_result_s r;
  if (!lookup(ip, &r)) return 0;
  MMDB_entry_data_s d;
  if (MMDB_get_value(&r.entry, &d, "autonomous_system_number", nullptr) != MMDB_SUCCESS || !d.has_data) return 0;
  if (d.type == MMDB_DATA_TYPE_UINT32) return d.uint32;
  if (d.type == MMDB_DATA_TYPE_UINT16) return d.uint16;
  return 0;
}

bool Geo::refresh(const std::string& country_path, const std::string& asn_path, std::string* error) {
  bool ok = true, reopened = false;
  std::pair<const std::string*, GeoDb*> dbs[] = {{&country_path, &country_}, {&asn_path, &asn_}};
  for (auto [path, db] : dbs) {
    if (path->empty()) continue;
    std::string err;
    if (!db->refresh(*path, &err, &reopened)) {
      *error = err;
      ok = false;
    }
  }
  if (reopened && ++gen_ == 0) gen_ = 1;  // every cached answer is from before
  return ok;
}

const Geo::Info& Geo::lookup(const IpAddr& ip) {
  uint64_t lo, hi;
  std::memcpy(&lo, ip.b.data(), 8);
  std::memcpy(&hi, ip.b.data() + 8, 8);
  uint64_t h = (lo ^ (hi * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
  Entry& e = cache_[(h >> 32) % kSlots];
  if (e.gen == gen_ && e.ip.b == ip.b) return e.info;
  e.ip = ip;
  e.gen = gen_;
  e.info = Info();
  std::string c = country_.country(ip);
  if (c.size() == 2) std::memcpy(e.info.country, c.data(), 2);
  e.info.asn = asn_.asn(ip);
  return e.info;
}

}  // namespace px::net
