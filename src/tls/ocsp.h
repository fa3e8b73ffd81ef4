// px::tls OCSP (RFC 6960) for stapling: where a certificate's responder is,
// the request pxadmind sends it, and what pxadmind checks in the answer before
// pxd staples it (the status is good, for this certificate, and current).
// BoringSSL has no OCSP module: requests and answers are DER built and read
// with its CBB/CBS. Pure code.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace px::tls {

// The leaf's OCSP responder URL (Authority Information Access), or "" when it names none.
std::string ocsp_url(std::string_view chain_pem);

// The DER OCSPRequest for the leaf (the first certificate of chain_pem), whose
// issuer is the second. false (with *error) when the chain has no issuer.
bool ocsp_request(std::string_view chain_pem, std::string* der, std::string* error);

struct OcspStatus {
  int64_t this_update = 0, next_update = 0;  // unix seconds (next_update 0: not given)
};

// Checks a DER OCSPResponse for the chain's leaf: successful, a SingleResponse
// for its serial with status good, thisUpdate not in the future (5 minutes'
// slack), nextUpdate not passed. The responder's signature is the client's to
// check (as every TLS client that asks for stapling does).
bool ocsp_check(std::string_view response_der, std::string_view chain_pem, int64_t now, OcspStatus* out,
                std::string* error);

}  // namespace px::tls
