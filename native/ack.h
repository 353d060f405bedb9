// An early answer to a FUSE WRITE, shared by the two addons that meet on a write's way:
// vsm_fuse makes one for a request (writeAck), JavaScript hands it down the block layers
// with the write, and vsm_sys's pwriteBatch is told of it with each device write the
// request became. The write thread (sys.cc) that writes the last of them, all without an
// error, sends the request's answer at once: the guest's write is acknowledged without
// waiting for the completion to reach Node's main thread and JavaScript, which still
// runs that completion (and answers the request itself whenever this did not).
//
// `left` counts the pieces not yet written: 1 (the request) at first; a layer that splits
// a piece into k adds k - 1 before it passes them on, and each device write, once
// written, takes 1. A piece a layer keeps (it must act after its writes land, before the
// write may be acknowledged) is never taken, so the count never reaches 0 and only
// JavaScript answers. `claimed`: whoever sets it first answers (this or JavaScript's
// reply), the other only lets go.
#pragma once
#include <atomic>

struct VsmAck {
  std::atomic<int> refs{1};
  std::atomic<int> left{1};
  std::atomic<bool> failed{false};
  std::atomic<bool> claimed{false};
  void (*answer)(VsmAck *) = nullptr;
  void (*destroy)(VsmAck *) = nullptr;
};

inline void vsmAckHold(VsmAck *a) { a->refs.fetch_add(1); }

inline void vsmAckRelease(VsmAck *a) {
  if (a->refs.fetch_sub(1) == 1) a->destroy(a);
}

// One device write of the request's is over: written (ok) or failed. A failure is
// recorded before the count moves, so whoever takes it to 0 sees it.
inline void vsmAckWritten(VsmAck *a, bool ok) {
  if (!ok) a->failed.store(true);
  if (a->left.fetch_sub(1) == 1 && !a->failed.load() && !a->claimed.exchange(true)) a->answer(a);
}
