// px::DeferredSend — a connection whose writes wait for the end of the loop iteration's I/O, so that what all
// its streams sent in one iteration leaves in one write (Worker::defer_h2: HTTP/2 towards clients and peers).
#pragma once

namespace px {

class DeferredSend {
 public:
  bool in_deferred = false;  // in the worker's list
  virtual void deferred_send() = 0;

 protected:
  ~DeferredSend() = default;
};

}  // namespace px
