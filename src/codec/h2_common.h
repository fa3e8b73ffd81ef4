// px::proxy HTTP/2 pieces both sides of nghttp2 use: the server codec (h2.h, towards clients) and the client
// side (upstream/h2up.h, towards peers).
#pragma once
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "stream/downstream.h"

namespace px::proxy {

// A data source's body: up to `max` bytes from `off` into nghttp2's buffer, the rest compacted as it is
// taken (once kLowWater has gone). The bytes taken.
size_t h2_take_body(std::string& body, size_t& off, uint8_t* out, size_t max);

// Trailer fields as HTTP/2 sends them: lowercase names, without those a trailer must not carry (hop-by-hop,
// Host, pseudo-headers). Appended to `out`.
void h2_trailer_fields(const Fields& in, Fields* out);
// Submits `trailers` (h2_trailer_fields's) as the stream's last HEADERS: from a data source's read callback,
// with NGHTTP2_DATA_FLAG_NO_END_STREAM set.
void h2_submit_trailers(nghttp2_session* ng, int32_t id, Fields& trailers);

}  // namespace px::proxy
