// px::proxy::Recorder — pxctl route set --record N: the next N requests of a route, written by pxd as JSON
// lines to <status_file>.records/<route>.jsonl, the input of pxctl filter test. Heads only, never bodies;
// Authorization, Proxy-Authorization, Cookie and the headers the route's record.mask names are masked. The
// count is host-wide (the shared table), so N means N whatever the number of workers. It observes the end
// record of streams whose route records, and only those (end_stream asks it).
#pragma once
#include <string>

#include "observe/end_record.h"

namespace px {
class SharedTable;
}

namespace px::proxy {

class Recorder final : public EndObserver {
 public:
  Recorder(std::string dir, SharedTable* shared) : dir_(std::move(dir)), shared_(shared) {}
  void on_stream_end(const EndRecord& r) override;

 private:
  std::string dir_;
  SharedTable* shared_;
};

}  // namespace px::proxy
