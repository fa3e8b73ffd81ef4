#include "observe/end_record.h"

namespace px::proxy {

const char* termination_name(Termination t) {
  switch (t) {
    case Termination::ok: return "ok";
    case Termination::local: return "local";
    case Termination::bad_request: return "bad_request";
    case Termination::client_timeout: return "client_timeout";
    case Termination::client_closed: return "client_closed";
    case Termination::no_upstream: return "no_upstream";
    case Termination::upstream_refused: return "upstream_refused";
    case Termination::upstream_connect_timeout: return "upstream_connect_timeout";
    case Termination::upstream_timeout: return "upstream_timeout";
    case Termination::upstream_closed: return "upstream_closed";
    case Termination::upstream_bad_response: return "upstream_bad_response";
    case Termination::filter_error: return "filter_error";
    case Termination::shutdown: return "shutdown";
    case Termination::denied: return "denied";
    case Termination::limit: return "limit";
    case Termination::idle_timeout: return "idle_timeout";
    case Termination::max_lifetime: return "max_lifetime";
    case Termination::tls_handshake: return "tls_handshake";
  }
  return "?";
}

}  // namespace px::proxy
