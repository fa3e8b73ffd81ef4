// px::net::Turns — the two lists a socket set (EpollSet, UringSet) keeps of its transports: those owed a
// turn (to read what is already there, or finish connecting, without a new event) and those owed
// on_closed(). Both run from the set's own event handling, or from a uv_idle_t when something was listed
// outside it (the loop then does not block before running them).
//
// T has `T* next_turn`, `T* next_closed`, `bool in_turns`, `void on_turn()` and `void on_closed_now()`.
#pragma once
#include <uv.h>

namespace px::net {

template <class T>
class Turns {
 public:
  void init(uv_loop_t* loop) {
    uv_idle_init(loop, &idle_);
    idle_.data = this;
    open_ = true;
  }
  // The idle handle is closed; what is listed stays until forget_turns() and reap().
  void close() {
    if (!open_) return;
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
  }

  void want_turn(T* t) {
    if (t->in_turns) return;
    t->in_turns = true;
    t->next_turn = turn_head_;
    turn_head_ = t;
    arm();
  }
  void closed(T* t) {
    t->next_closed = closed_head_;
    closed_head_ = t;
    arm();
  }

  // One pass over what is listed now; what a turn lists again waits for the next pass.
  void turns() {
    T* t = turn_head_;
    turn_head_ = nullptr;
    while (t) {
      T* next = t->next_turn;
      t->in_turns = false;
      t->next_turn = nullptr;
      t->on_turn();
      t = next;
    }
  }

  void reap() {
    while (T* t = closed_head_) {
      closed_head_ = t->next_closed;
      t->next_closed = nullptr;
      if (t->in_turns) {  // listed again after the last pass (rare): not after it is freed
        for (T** p = &turn_head_; *p; p = &(*p)->next_turn)
          if (*p == t) {
            *p = t->next_turn;
            break;
          }
        t->in_turns = false;
        t->next_turn = nullptr;
      }
      t->on_closed_now();  // may free t
    }
  }

  // The set is closing: no turns any more (every transport is closing).
  void forget_turns() {
    while (T* t = turn_head_) {
      turn_head_ = t->next_turn;
      t->next_turn = nullptr;
      t->in_turns = false;
    }
  }

 private:
  void arm() {
    if (on_ || !open_) return;
    on_ = true;
    uv_idle_start(&idle_, [](uv_idle_t* h) {
      auto* s = static_cast<Turns*>(h->data);
      s->turns();
      s->reap();
      if (!s->turn_head_ && !s->closed_head_) {
        uv_idle_stop(h);
        s->on_ = false;
      }
    });
  }

  uv_idle_t idle_;
  bool open_ = false, on_ = false;
  T* turn_head_ = nullptr;
  T* closed_head_ = nullptr;
};

}  // namespace px::net
