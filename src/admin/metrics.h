// pxadmind's Prometheus series (pxadmind --metrics ADDR:PORT): the API's
// requests, ACME orders and their failures, and, computed at each scrape from
// the store, the generation, every certificate's expiry and ACME state, and
// whether each pxd serves the current generation. pxadmind is one thread:
// prometheus-cpp's registry is used as it comes.
#pragma once
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <string>
#include <string_view>
#include <vector>

#include "admin/model.h"

namespace px::admin {

class AdminMetrics {
 public:
  AdminMetrics();
  void api_request(std::string_view method, int status);
  // An order ended: issued, or failed with this problem type.
  void acme_order(bool issued, const std::string& problem_type);
  std::string text(Admin& admin, const std::vector<std::string>& pxd_status_files);

 private:
  prometheus::Registry reg_;
  prometheus::Family<prometheus::Counter>& api_;
  prometheus::Family<prometheus::Counter>& orders_;
  prometheus::Family<prometheus::Counter>& failures_;
};

}  // namespace px::admin
