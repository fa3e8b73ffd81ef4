// px::acme DNS-01 plumbing: the operator's hook command (dns_hook) that adds
// and removes TXT records, and a TXT lookup over UDP to see when a record is
// visible. On the event loop (uv_spawn, uv_udp); nothing blocks.
#pragma once
#include <uv.h>

#include <functional>
#include <string>
#include <vector>

namespace px::acme {

// Runs `hook add|del FQDN VALUE` (stdin closed, stdout and stderr shared with
// pxadmind's). done("") on exit status 0, else a sentence saying what happened.
void run_hook(uv_loop_t* loop, const std::string& hook, const std::vector<std::string>& args, uint64_t timeout_ms,
              std::function<void(std::string error)> done);

// Asks `server` ("IP:PORT" or "[IPv6]:PORT") for the TXT records at `fqdn`.
void query_txt(uv_loop_t* loop, const std::string& server, const std::string& fqdn, uint64_t timeout_ms,
               std::function<void(std::vector<std::string> values, std::string error)> done);

// The first nameserver of /etc/resolv.conf as "IP:53" ("127.0.0.1:53" when there is none).
std::string system_resolver();

// Builds a TXT query (exposed for the unit tests) and reads an answer: the TXT
// strings of every answer record (each record's strings joined), or an error.
std::string build_txt_query(uint16_t id, const std::string& fqdn);
bool parse_txt_answer(const std::string& msg, uint16_t id, std::vector<std::string>* values, std::string* error);

}  // namespace px::acme
