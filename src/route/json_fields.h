// Field readers shared by the route and stream validators (route.cpp, stream.cpp):
// every failure is "field: problem".
#pragma once
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>

#include "route/route.h"

namespace px::route::fields {

using json = nlohmann::json;

bool fail(std::string* error, const std::string& field, const std::string& msg);
// Every key of j is one of known (else "KEY: unknown field").
bool only_known(const json& j, std::initializer_list<const char*> known, std::string* error);
// j[key] as a whole number ≤ max, when present.
bool get_uint(const json& j, const char* key, uint64_t* out, uint64_t max, std::string* error,
              const std::string& prefix = "");
// j[key] as a duration in ms ≤ max_ms: a whole number of milliseconds, or a string with a unit
// ("500ms", "30s", "5m", "1h"; a bare number in a string is milliseconds too).
bool get_duration_ms(const json& j, const char* key, uint64_t* out, uint64_t max_ms, std::string* error,
                     const std::string& prefix = "");
// j[key] as a size ≤ max: a whole number of bytes, or a string with a unit ("16k", "10m", "2g").
bool get_size(const json& j, const char* key, uint64_t* out, uint64_t max, std::string* error,
              const std::string& prefix = "");
// An upstream given as {"url": ..., "weight": ...}: only those keys, a weight of 1..1000.
bool upstream_weight(const json& u, const std::string& field, uint32_t* weight, std::string* error);
// "health_check": interval_ms, timeout_ms, healthy, unhealthy (and path when with_path).
bool health_check(const json& h, bool with_path, HealthCheckSpec* out, std::string* error);
json health_check_json(const HealthCheckSpec& h, bool with_path);

}  // namespace px::route::fields
