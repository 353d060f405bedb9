// vsm_sys: the few system calls the daemon needs that Node does not offer.
// flock(fd, op) holds the one-daemon-per-home lock; peercred(fd) reads the
// uid/gid/pid of the process at the other end of a unix socket (SO_PEERCRED), which
// the control server authorises commands by; discard(fd, offset, length, blockDevice)
// gives a range of a backing device back so that it reads as zeros (a hole punched in a
// file; on a block device the kernel's punch, a write-zeroes with unmap, or BLKZEROOUT
// where the device has no unmap, since BLKDISCARD alone may leave old data readable and
// the copies of a mirror must agree), on libuv's thread pool: it can block as a write can;
// readNowait(fd, buf, offset) reads what the page cache holds without ever waiting on the
// device (RWF_NOWAIT); pwriteBatch(fds, bufs, offsets, cb) writes many buffers to one or
// more files in one job of the write threads (below), so the writes made in one turn of
// the event loop pay one hand-off instead of one each, and takeBack(job) takes the ones not
// begun back out of a job that a blocked write holds up. Errors are thrown as Error objects with
// the errno name in .code, as Node's own fs errors are.
#include <napi.h>
#include <uv.h>
#include <pthread.h>
#include "ack.h"
#include <cerrno>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <unistd.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace {

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  const char* name = strerrorname_np(err);
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

bool FdArg(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "a file descriptor (number) is expected").ThrowAsJavaScriptException();
    return false;
  }
  *fd = info[i].As<Napi::Number>().Int32Value();
  return true;
}

// flock(fd, op): op is a mask of LOCK_SH/LOCK_EX/LOCK_UN/LOCK_NB. A lock that is held
// elsewhere under LOCK_NB throws with code EAGAIN (EWOULDBLOCK on Linux).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  int fd;
  if (!FdArg(info, 0, &fd)) return info.Env().Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) {
    Napi::TypeError::New(info.Env(), "flock: an operation (number) is expected").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  int op = info[1].As<Napi::Number>().Int32Value();
  int r;
  do { r = flock(fd, op); } while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(info.Env(), errno, "flock");
  return info.Env().Undefined();
}

// peercred(fd) -> { pid, uid, gid } of the peer, as the kernel recorded it at connect().
Napi::Value Peercred(const Napi::CallbackInfo& info) {
  int fd;
  if (!FdArg(info, 0, &fd)) return info.Env().Undefined();
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return ThrowErrno(info.Env(), errno, "getsockopt(SO_PEERCRED)");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("pid", Napi::Number::New(info.Env(), cred.pid));
  o.Set("uid", Napi::Number::New(info.Env(), cred.uid));
  o.Set("gid", Napi::Number::New(info.Env(), cred.gid));
  return o;
}

class DiscardWorker : public Napi::AsyncWorker {
 public:
  DiscardWorker(Napi::Env env, int fd, uint64_t offset, uint64_t length, bool block)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), offset_(offset), length_(length), block_(block) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r;
    do { r = fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset_, (off_t)length_); } while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EOPNOTSUPP && block_) {
      uint64_t range[2] = {offset_, length_};
      do { r = ioctl(fd_, BLKZEROOUT, range); } while (r < 0 && errno == EINTR);
    }
    err_ = r < 0 ? errno : 0;
  }
  void OnOK() override {
    if (!err_) { deferred_.Resolve(Env().Undefined()); return; }
    const char* name = strerrorname_np(err_);
    Napi::Error e = Napi::Error::New(Env(), std::string("discard") + ": " + strerror(err_));
    e.Set("code", Napi::String::New(Env(), name ? name : "EUNKNOWN"));
    e.Set("errno", Napi::Number::New(Env(), -err_));
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  uint64_t offset_, length_;
  bool block_;
  int err_ = 0;
};

// pwriteBatch(fds, bufs, offsets, cb) -> job: writes each bufs[i] whole at offsets[i] of
// fds[i], in order, in one job of the write threads (bufs[i] null: fdatasync(fds[i]) there,
// after the job's writes before it); cb(errors) with errors[i] undefined when it was
// written (or taken back), else its errno's name (EIO for a write that made no progress).
// Each write is claimed (an atomic) before it starts, so takeBack(job) can take the ones
// not begun out of a job that one blocked write holds up (they are never written by it)
// and tell how the others went. The caller keeps the buffers referenced until cb runs,
// and calls takeBack only before.
struct PwriteJob {
  // ack: the early answer of the FUSE request this write is part of (ack.h), held by the job
  struct Item { int fd; const uint8_t* data; size_t len; off_t off; bool sync = false; std::atomic<int> state{QUEUED}; int err = 0; VsmAck* ack = nullptr; };
  enum { QUEUED, STARTED, DONE, TAKEN };
  explicit PwriteJob(size_t n) : items(new Item[n]), count(n) {}
  ~PwriteJob() {
    for (size_t i = 0; i < count; i++) if (items[i].ack) vsmAckRelease(items[i].ack);
  }
  std::unique_ptr<Item[]> items;
  size_t count;
};

// Writes one job's items in order, each claimed before it starts (takeBack's other side).
void writeJob(PwriteJob& job) {
  for (size_t i = 0; i < job.count; i++) {
    PwriteJob::Item& e = job.items[i];
    int queued = PwriteJob::QUEUED;
    if (!e.state.compare_exchange_strong(queued, PwriteJob::STARTED)) continue;
    if (e.sync) {
      int r;
      do r = fdatasync(e.fd); while (r < 0 && errno == EINTR);
      if (r < 0) e.err = errno;
    }
    size_t done = 0;
    while (done < e.len) {
      ssize_t r = pwrite(e.fd, e.data + done, e.len - done, e.off + static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) { e.err = r < 0 ? errno : EIO; break; }
      done += static_cast<size_t>(r);
    }
    // before DONE: JavaScript sees the write over (and may answer the request and let the
    // session go) only once the early answer, if this sends it, has been sent
    if (e.ack) vsmAckWritten(e.ack, e.err == 0);
    e.state.store(PwriteJob::DONE, std::memory_order_release);
  }
}

// The threads that write the jobs, apart from libuv's pool: libuv signals its condition
// with the queue's mutex held, so the woken thread runs only to block on that mutex and
// is woken again when it is let go (two futex wakes and a context switch more per job:
// strace at 4 KiB random writes QD1 showed both wakes for every job), and each of its
// jobs costs an async work object and a handle scope. Here a job is queued under the
// lock and the thread is woken after it, and the completions of all jobs that finished
// since the main thread last looked reach it through one uv_async. Threads start as
// needed, up to WRITERS: a hung device ties up at most its queues' jobs (write-queue.ts
// caps them), the rest keep writing. Per Node environment (instance data); never freed:
// a thread blocked in a hung device's write may outlive the environment, and finds the
// pool closed when it returns.
constexpr int WRITERS = 16;

struct Writes {
  struct Work { std::shared_ptr<PwriteJob> job; Napi::FunctionReference cb; };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Work*> queue;
  int idle = 0, threads = 0;
  std::mutex dmu;
  std::vector<Work*> finished;
  bool closed = false;
  uv_async_t async;
  // main thread only: jobs not yet called back; while any are, they keep the loop alive
  size_t outstanding = 0;
  napi_env env = nullptr;
  std::unique_ptr<Napi::AsyncContext> ctx;
};

void *writer(void *arg) {
  auto *w = static_cast<Writes *>(arg);
  for (;;) {
    Writes::Work *work;
    {
      std::unique_lock<std::mutex> g(w->mu);
      w->idle++;
      w->cv.wait(g, [w] { return !w->queue.empty(); });
      w->idle--;
      work = w->queue.front();
      w->queue.pop_front();
    }
    writeJob(*work->job);
    std::lock_guard<std::mutex> g(w->dmu);
    if (w->closed) continue; // the environment is gone: nobody to tell, nothing to free safely
    w->finished.push_back(work);
    uv_async_send(&w->async);
  }
}

void callBack(napi_env env, Writes::Work *work) {
  Napi::Env e(env);
  PwriteJob &job = *work->job;
  Napi::Array out = Napi::Array::New(e, job.count);
  for (size_t i = 0; i < job.count; i++) {
    if (!job.items[i].err) continue;
    const char *name = strerrorname_np(job.items[i].err);
    out[i] = Napi::String::New(e, name ? name : "EIO");
  }
  work->cb.Call({out});
  // as for any callback from the event loop: an exception is the process's uncaught one
  if (e.IsExceptionPending()) napi_fatal_exception(env, e.GetAndClearPendingException().Value());
}

void onFinished(uv_async_t *h) {
  auto *w = static_cast<Writes *>(h->data);
  std::vector<Writes::Work *> batch;
  {
    std::lock_guard<std::mutex> g(w->dmu);
    batch.swap(w->finished);
  }
  if (batch.empty()) return;
  Napi::Env env(w->env);
  Napi::HandleScope hs(env);
  // microtasks (the writes' promise work) run when the scope closes, after the batch
  Napi::CallbackScope cs(env, *w->ctx);
  for (auto *work : batch) {
    callBack(w->env, work);
    delete work;
  }
  w->outstanding -= batch.size();
  if (!w->outstanding) uv_unref(reinterpret_cast<uv_handle_t *>(&w->async));
}

void closeWrites(Napi::Env, Writes *w) {
  std::lock_guard<std::mutex> g(w->dmu);
  w->closed = true;
  uv_close(reinterpret_cast<uv_handle_t *>(&w->async), nullptr);
  w->ctx.reset();
}

Writes *writesOf(Napi::Env env) {
  if (auto *w = env.GetInstanceData<Writes>()) return w;
  auto *w = new Writes();
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_async_init(loop, &w->async, onFinished) != 0) {
    Napi::Error::Fatal("vsm_sys", "cannot set up the write threads' completions");
  }
  w->async.data = w;
  uv_unref(reinterpret_cast<uv_handle_t *>(&w->async));
  w->env = env;
  w->ctx = std::make_unique<Napi::AsyncContext>(env, "vsm_sys.pwriteBatch");
  env.SetInstanceData<Writes, closeWrites>(w);
  return w;
}

void submit(Napi::Env env, std::shared_ptr<PwriteJob> job, Napi::Function cb) {
  Writes *w = writesOf(env);
  auto *work = new Writes::Work{std::move(job), Napi::Persistent(cb)};
  if (!w->outstanding++) uv_ref(reinterpret_cast<uv_handle_t *>(&w->async));
  bool wake, spawn = false;
  {
    std::lock_guard<std::mutex> g(w->mu);
    w->queue.push_back(work);
    wake = w->idle > 0;
    if (!wake && w->threads < WRITERS) { w->threads++; spawn = true; }
  }
  if (wake) w->cv.notify_one();
  if (spawn) {
    pthread_t t;
    if (pthread_create(&t, nullptr, writer, w) != 0) Napi::Error::Fatal("vsm_sys", "cannot start a write thread");
    pthread_detach(t);
  }
}

// pwriteBatch(fds, bufs, offsets, cb[, acks]) -> job: acks[i], when there, is the early
// answer (ack.h, from vsm_fuse's writeAck) that write i is a piece of.
Napi::Value PwriteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsArray() || !info[1].IsArray() || !info[2].IsArray() || !info[3].IsFunction() ||
      info[0].As<Napi::Array>().Length() != info[1].As<Napi::Array>().Length() ||
      info[1].As<Napi::Array>().Length() != info[2].As<Napi::Array>().Length() ||
      (info.Length() > 4 && !info[4].IsUndefined() && (!info[4].IsArray() || info[4].As<Napi::Array>().Length() != info[1].As<Napi::Array>().Length()))) {
    Napi::TypeError::New(env, "pwriteBatch: descriptors, as many buffers and offsets, a callback, and as many acks if any are expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array fds = info[0].As<Napi::Array>(), bufs = info[1].As<Napi::Array>(), offs = info[2].As<Napi::Array>();
  Napi::Array acks = info.Length() > 4 && info[4].IsArray() ? info[4].As<Napi::Array>() : Napi::Array();
  auto job = std::make_shared<PwriteJob>(bufs.Length());
  for (uint32_t i = 0; i < bufs.Length(); i++) {
    Napi::Value f = fds[i], b = bufs[i], o = offs[i];
    if (!f.IsNumber() || !(b.IsTypedArray() || b.IsNull()) || !o.IsNumber()) {
      Napi::TypeError::New(env, "pwriteBatch: each entry is a descriptor, a Buffer (or null: fdatasync) and an offset").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    PwriteJob::Item& e = job->items[i];
    e.fd = f.As<Napi::Number>().Int32Value();
    e.off = static_cast<off_t>(o.As<Napi::Number>().Int64Value());
    if (b.IsNull()) {
      e.sync = true;
      e.data = nullptr;
      e.len = 0;
    } else {
      Napi::TypedArray t = b.As<Napi::TypedArray>();
      e.data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
      e.len = t.ByteLength();
    }
    if (!acks.IsEmpty()) {
      Napi::Value a = acks[i];
      if (a.IsExternal()) { e.ack = a.As<Napi::External<VsmAck>>().Data(); vsmAckHold(e.ack); }
    }
  }
  submit(env, job, info[3].As<Napi::Function>());
  return Napi::External<std::shared_ptr<PwriteJob>>::New(env, new std::shared_ptr<PwriteJob>(job),
                                                         [](Napi::Env, std::shared_ptr<PwriteJob>* p) { delete p; });
}

// takeBack(job) -> for each write of the job: "taken" (not begun: it never will be, now or
// taken before), "busy" (being written), undefined (written) or its errno's name (failed).
Napi::Value TakeBack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(env, "takeBack: a job from pwriteBatch is expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  PwriteJob& job = **info[0].As<Napi::External<std::shared_ptr<PwriteJob>>>().Data();
  Napi::Array out = Napi::Array::New(env, job.count);
  for (size_t i = 0; i < job.count; i++) {
    PwriteJob::Item& e = job.items[i];
    int state = PwriteJob::QUEUED;
    if (e.state.compare_exchange_strong(state, PwriteJob::TAKEN, std::memory_order_acq_rel) || state == PwriteJob::TAKEN) {
      out[i] = Napi::String::New(env, "taken");
    } else if (state == PwriteJob::STARTED) {
      out[i] = Napi::String::New(env, "busy");
    } else if (e.err) {
      const char* name = strerrorname_np(e.err);
      out[i] = Napi::String::New(env, name ? name : "EIO");
    }
  }
  return out;
}

// readNowait(fd, buf, offset) -> bytes read into buf, -1 when that would have to wait for
// the device (not all in the page cache) or failed, -2 when the file takes no RWF_NOWAIT
// (FUSE): a read the page cache can answer, answered on the calling thread with no
// thread pool hop, and never one that waits on a device.
Napi::Value ReadNowait(const Napi::CallbackInfo& info) {
  int fd;
  if (!FdArg(info, 0, &fd)) return info.Env().Undefined();
  if (info.Length() < 3 || !info[1].IsTypedArray() || !info[2].IsNumber()) {
    Napi::TypeError::New(info.Env(), "readNowait: a Buffer and an offset are expected").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::TypedArray t = info[1].As<Napi::TypedArray>();
  struct iovec v = {static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength()};
  ssize_t r = preadv2(fd, &v, 1, static_cast<off_t>(info[2].As<Napi::Number>().Int64Value()), RWF_NOWAIT);
  if (r < 0) r = errno == EOPNOTSUPP ? -2 : -1;
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// discard(fd, offset, length, blockDevice) -> Promise<void>
Napi::Value Discard(const Napi::CallbackInfo& info) {
  int fd;
  if (!FdArg(info, 0, &fd)) return info.Env().Undefined();
  if (info.Length() < 4 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsBoolean()) {
    Napi::TypeError::New(info.Env(), "discard: offset, length (numbers) and blockDevice (boolean) are expected").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto* w = new DiscardWorker(info.Env(), fd, (uint64_t)info[1].As<Napi::Number>().Int64Value(),
                              (uint64_t)info[2].As<Napi::Number>().Int64Value(), info[3].As<Napi::Boolean>().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("discard", Napi::Function::New(env, Discard));
  exports.Set("readNowait", Napi::Function::New(env, ReadNowait));
  exports.Set("pwriteBatch", Napi::Function::New(env, PwriteBatch));
  exports.Set("takeBack", Napi::Function::New(env, TakeBack));
  exports.Set("flock", Napi::Function::New(env, Flock));
  exports.Set("peercred", Napi::Function::New(env, Peercred));
  exports.Set("LOCK_SH", Napi::Number::New(env, LOCK_SH));
  exports.Set("LOCK_EX", Napi::Number::New(env, LOCK_EX));
  exports.Set("LOCK_NB", Napi::Number::New(env, LOCK_NB));
  exports.Set("LOCK_UN", Napi::Number::New(env, LOCK_UN));
  return exports;
}

}  // namespace

NODE_API_MODULE(vsm_sys, Init)
