// px::http h1 — writing HTTP/1.1 text. With http::Parser (reading), this is
// the only place in px that knows what HTTP/1 looks like on the wire.
#pragma once
#include <string_view>

#include "net/output.h"

namespace px::http {

// The 503 a worker answers before closing a connection it cannot take.
void write_busy(net::Output& out);
// An active health check's request.
void write_probe_request(net::Output& out, std::string_view path, std::string_view host);

}  // namespace px::http
