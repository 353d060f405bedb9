// vsm_fuse: the FUSE view's own binding, on libfuse3's low-level API. This file runs the
// session: mount, the read loop, the hand-over to JavaScript, unmount (session.h names the
// other two files).
//
// Node's main thread reads /dev/fuse itself, as qemu-storage-daemon's export does: the
// session's descriptor is non-blocking and watched by libuv (uv_poll), and each time it
// is readable the requests waiting there (up to a batch) are taken one after another,
// each turned into a Req and handed to JavaScript's dispatch at once, inside one
// callback scope, so the promise work of a batch runs after all of it is dispatched
// (and a device's writes made by the batch go to the thread pool as one job). A request
// thus costs one wake of the main thread by the kernel. Worker threads that read the
// device and passed each request on (a napi_threadsafe_function) cost two more context
// switches and an eventfd write a request: under 4 KiB random writes at QD1 on this
// 2-vCPU machine the scheduler (wakeups, task switches) took more of the daemon's cycles
// than the writes did (perf record).
// JavaScript answers later by calling reply*(req, ...); the fuse_reply_* call writes the
// answer to /dev/fuse and frees the Req. A WRITE's answer can instead be left to the
// session's replier thread (replyWriteLater): the writev to /dev/fuse that completes the
// caller's I/O cost the main thread ~20 us a request under 4 KiB random writes at QD16,
// while other requests waited for it.
//
// Buffers: a large WRITE's payload is handed to JavaScript as the receive buffer itself
// (the loop takes a fresh one for its next request), so written bytes are never copied
// in user space; smaller data is copied into a Buffer of V8's own (releasing an external
// Buffer posts its free callback back to the loop with an eventfd write: one write(2) per
// 4 KiB write, strace); a READ is answered straight from the Buffer JavaScript filled.
// Requests are up to 1 MiB: libfuse's session buffer is sized for FUSE_MAX_MAX_PAGES
// and it negotiates max_pages from max_write.
//
// Node ids are the fs's inode numbers (chosen by the JS side, which owns the mapping).
//
// Unmounting: libfuse's unmount closes the descriptor it mounted with. The session reads
// and answers through a duplicate of it instead, so requests of files still open on the
// detached mount are served until the kernel ends the connection (a read then fails
// with ENODEV), and only then is JavaScript told the session closed.
//
// Set-user/group-ID clearing (FUSE_HANDLE_KILLPRIV_V2): without it the kernel asks for
// the security.capability xattr before every write to a file (file_remove_privs), one
// more round trip per write; with it the superblock is SB_NOSEC and the kernel flags the
// writes, truncates, chowns and O_TRUNC opens whose caller may not keep the bits, for the
// server to clear. libfuse 3.14 neither offers the capability nor passes those flags on,
// so the loop reads them from the raw request and the session's I/O adds the
// capability to the INIT reply when the kernel offered it.

#include "session.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sched.h>
#include <set>
#include <sys/mount.h>
#include <sys/uio.h>
#include <unistd.h>

namespace vsm_fuse {
namespace {

std::mutex g_live_mu;
std::set<std::string> g_live_mounts; // unmounted lazily at exit(), even after an uncaught error

// The KILLPRIV_V2 flags of a request libfuse is about to dispatch (see the header).
void peek(Session *s, const fuse_buf &b) {
  g_kill = false;
  if ((b.flags & FUSE_BUF_IS_FD) || b.size < sizeof(fuse_in_header)) return;
  const auto *h = static_cast<const fuse_in_header *>(b.mem);
  const char *arg = static_cast<const char *>(b.mem) + sizeof *h;
  size_t n = b.size - sizeof *h;
  switch (h->opcode) {
    case FUSE_INIT:
      if (n >= offsetof(fuse_init_in, flags) + 4 && (reinterpret_cast<const fuse_init_in *>(arg)->flags & FUSE_HANDLE_KILLPRIV_V2)) {
        s->initUnique = h->unique;
      }
      break;
    case FUSE_WRITE:
      g_kill = n >= sizeof(fuse_write_in) && (reinterpret_cast<const fuse_write_in *>(arg)->write_flags & FUSE_WRITE_KILL_SUIDGID);
      break;
    case FUSE_OPEN:
      g_kill = n >= sizeof(fuse_open_in) && (reinterpret_cast<const fuse_open_in *>(arg)->open_flags & FUSE_OPEN_KILL_SUIDGID);
      break;
  }
}

// The session's I/O goes through s->fd (see Unmounting in the header), whatever libfuse passes.
ssize_t ioRead(int, void *buf, size_t len, void *userdata) { return read(static_cast<Session *>(userdata)->fd, buf, len); }

ssize_t ioWritev(int, struct iovec *iov, int count, void *userdata) {
  auto *s = static_cast<Session *>(userdata);
  uint64_t init = s->initUnique.load();
  if (init && count >= 2 && iov[0].iov_len >= sizeof(fuse_out_header) && iov[1].iov_len >= offsetof(fuse_init_out, flags) + 4) {
    const auto *oh = static_cast<const fuse_out_header *>(iov[0].iov_base);
    if (oh->unique == init && oh->error == 0) {
      static_cast<fuse_init_out *>(iov[1].iov_base)->flags |= FUSE_HANDLE_KILLPRIV_V2;
      s->initUnique = 0;
    }
  }
  return writev(s->fd, iov, count);
}

// Requests taken per wake before the loop runs its other handles (the control socket,
// the thread pool's completions); the descriptor stays readable, so the rest follow at once.
constexpr int BATCH = 64;

void stopPolling(Session *s);

void onReadable(uv_poll_t *h, int, int) {
  auto *s = static_cast<Session *>(h->data);
  Napi::Env env(s->env);
  Napi::HandleScope hs(env);
  // microtasks (the handlers' promise work) run when the scope closes, after the batch
  Napi::CallbackScope cs(env, *s->async);
  for (int i = 0; i < BATCH && s->polling; i++) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EINTR) continue;
    if (res == -EAGAIN) return;
    if (res <= 0) {
      // the kernel ended the connection: tell JavaScript, once
      stopPolling(s);
      Req *r = new Req();
      r->s = s;
      r->op = OP_CLOSED;
      callJs(r);
      return;
    }
    g_steal = false;
    peek(s, s->buf);
    fuse_session_process_buf(s->se, &s->buf);
    if (g_steal) s->buf.mem = nullptr; // taken by a WRITE; receive allocates a fresh one
  }
}

void stopPolling(Session *s) {
  if (!s->polling) return;
  s->polling = false;
  uv_poll_stop(&s->poll);
  uv_close(reinterpret_cast<uv_handle_t *>(&s->poll), nullptr);
}

struct Owned { char *mem; int64_t size; };

void freeMem(Napi::Env env, char *, Owned *o) {
  free(o->mem);
  Napi::MemoryManagement::AdjustExternalMemory(env, -o->size);
  delete o;
}

}  // namespace

// Hands r to JavaScript's dispatch; called on the main thread inside onReadable's scopes.
void callJs(Req *r) {
  Napi::Env env(r->s->env);
  Napi::Function fn = r->s->dispatch.Value();
  Napi::Value undef = env.Undefined();
  Napi::Value data = undef;
  if (r->hasData && r->mem) {
    Napi::MemoryManagement::AdjustExternalMemory(env, r->memSize);
    data = Napi::Buffer<char>::New(env, r->data, r->dlen, freeMem, new Owned{r->mem, r->memSize});
    r->mem = nullptr;
  } else if (r->hasData) {
    data = Napi::Buffer<char>::Copy(env, r->data, r->dlen);
  }
  bool noReply = r->op == OP_CLOSED || r->op == OP_FORGET;
  std::initializer_list<napi_value> args = {
    Napi::Number::New(env, r->op),
    Napi::Number::New(env, noReply ? 0 : static_cast<double>(reinterpret_cast<uintptr_t>(r))),
    Napi::Number::New(env, r->ino), Napi::Number::New(env, r->fh), Napi::Number::New(env, r->off),
    Napi::Number::New(env, r->size), Napi::Number::New(env, r->flags),
    r->name.empty() ? undef : Napi::String::New(env, r->name),
    r->name2.empty() ? undef : Napi::String::New(env, r->name2),
    data,
    Napi::Number::New(env, r->ino2), Napi::Number::New(env, r->fh2), Napi::Number::New(env, r->off2),
    Napi::Number::New(env, r->mode),
    Napi::Number::New(env, r->uid), Napi::Number::New(env, r->gid), Napi::Number::New(env, r->pid),
    Napi::Number::New(env, r->nsec), Napi::Number::New(env, r->nsec2),
  };
  if (noReply) delete r;
  fn.Call(args);
  // as for any callback from the event loop: an exception is the process's uncaught one
  if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
}

namespace {

// The device ("major:minor") of the topmost mount at path, from /proc/self/mountinfo
// (mount points there are octal-escaped); "" when nothing is mounted there.
std::string mountedDev(const std::string &path) {
  std::string esc;
  for (char c : path) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      char o[5];
      snprintf(o, sizeof o, "\\%03o", static_cast<unsigned char>(c));
      esc += o;
    } else {
      esc += c;
    }
  }
  std::string dev;
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return dev;
  char *line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    char id[32], at[4096];
    if (sscanf(line, "%*s %*s %31s %*s %4095s", id, at) == 2 && esc == at) dev = id;
  }
  free(line);
  fclose(f);
  return dev;
}

void forgetLive(const std::string &mnt) {
  std::lock_guard<std::mutex> g(g_live_mu);
  g_live_mounts.erase(mnt);
}

void unmountAllAtExit() {
  std::lock_guard<std::mutex> g(g_live_mu);
  for (const auto &m : g_live_mounts) umount2(m.c_str(), MNT_DETACH);
}

// mount(mountpoint, options string (-o list), dispatch(op, req, ...)) -> session handle
Napi::Value Mount(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string mnt = info[0].As<Napi::String>().Utf8Value();
  std::string opts = info[1].As<Napi::String>().Utf8Value();
  Napi::Function dispatch = info[2].As<Napi::Function>();

  auto *s = new Session();
  s->mountpoint = mnt;
  const char *argv[] = {"vsm", "-o", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char **>(argv));
  s->se = fuse_session_new(&args, &kOps, sizeof kOps, s);
  if (!s->se) {
    delete s;
    Napi::Error::New(env, "fuse_session_new failed (bad mount options?)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (fuse_session_mount(s->se, mnt.c_str()) != 0) {
    fuse_session_destroy(s->se);
    delete s;
    Napi::Error::New(env, "cannot mount FUSE at " + mnt).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  {
    std::lock_guard<std::mutex> g(g_live_mu);
    g_live_mounts.insert(mnt);
  }
  uv_loop_t *loop = nullptr;
  s->fd = fcntl(fuse_session_fd(s->se), F_DUPFD_CLOEXEC, 0);
  if (s->fd < 0 || fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK) != 0 ||
      napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &s->poll, s->fd) != 0) {
    int err = errno;
    if (s->fd >= 0) close(s->fd);
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    forgetLive(mnt);
    delete s;
    Napi::Error::New(env, std::string("cannot watch the FUSE session at ") + mnt + ": " + strerror(err)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  s->dev = mountedDev(mnt);
  const fuse_custom_io io = {ioWritev, ioRead, nullptr, nullptr};
  fuse_session_custom_io(s->se, &io, fuse_session_fd(s->se));
  s->env = env;
  s->dispatch = Napi::Persistent(dispatch);
  s->async = new Napi::AsyncContext(env, "vsm_fuse");
  s->poll.data = s;
  s->polling = true;
  uv_poll_start(&s->poll, UV_READABLE, onReadable);
  pthread_create(&s->replier, nullptr, replier, s);
  return Napi::External<Session>::New(env, s);
}

// invalAttr(session, ino): the kernel's cached attributes of ino are stale (the server
// changed them where no reply carries the new ones).
Napi::Value InvalAttr(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  if (!s->unmounted) fuse_lowlevel_notify_inval_inode(s->se, static_cast<fuse_ino_t>(info[1].As<Napi::Number>().Int64Value()), -1, 0);
  return info.Env().Undefined();
}

// The kernel's caches of a node changed from outside the view (a revert, a resize or a
// delete through the control socket) are dropped on a thread of libuv's pool, never on
// the main thread: dropping cached pages waits for the page locks of reads in flight,
// and those reads wait for the main thread to answer them. The session is kept alive by
// `answering` as an early answer keeps it (Destroy waits for both).
class InvalWorker : public Napi::AsyncWorker {
 public:
  InvalWorker(Napi::Env env, Session *s, fuse_ino_t ino, std::string name, bool data)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s), ino_(ino), name_(std::move(name)), data_(data) {
    s_->answering.fetch_add(1);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  // the count drops here, not in OnOK: Destroy waits for it on the main thread
  void Execute() override {
    // ENOENT: the kernel holds no such node or name any more, which is what was asked
    if (!s_->closing.load()) {
      if (!name_.empty()) fuse_lowlevel_notify_inval_entry(s_->se, ino_, name_.c_str(), name_.size());
      else fuse_lowlevel_notify_inval_inode(s_->se, ino_, data_ ? 0 : -1, 0);
    }
    s_->answering.fetch_sub(1);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  Napi::Promise::Deferred deferred_;
  Session *s_;
  fuse_ino_t ino_;
  std::string name_;
  bool data_;
};

// invalInode(session, ino, data) -> Promise: ino's cached attributes, and with data its
// cached pages, are dropped. invalEntry(session, parent, name) -> Promise: the name's
// cached entry in directory parent is dropped.
Napi::Value InvalInode(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  auto *w = new InvalWorker(info.Env(), s, static_cast<fuse_ino_t>(info[1].As<Napi::Number>().Int64Value()), std::string(), info[2].ToBoolean().Value());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value InvalEntry(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  auto *w = new InvalWorker(info.Env(), s, static_cast<fuse_ino_t>(info[1].As<Napi::Number>().Int64Value()), info[2].As<Napi::String>().Utf8Value(), false);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Detaches the session's mount, once. libfuse's unmount skips a session whose descriptor
// reports an error (a connection aborted through /sys/fs/fuse/connections: it takes the
// mount for gone), which leaves the dead mount (ENOTCONN) in place: it is detached here
// too when the mount on top of the mount point is still the device the session mounted
// (read from mountinfo: a stat would ask the dead server).
void unmountSession(Session *s) {
  if (s->unmounted) return;
  s->unmounted = true;
  fuse_session_unmount(s->se);
  if (!s->dev.empty() && mountedDev(s->mountpoint) == s->dev) umount2(s->mountpoint.c_str(), MNT_DETACH);
  forgetLive(s->mountpoint);
}

// unmount(session): detach the mount; OP_CLOSED follows when the kernel ends the connection.
Napi::Value Unmount(const Napi::CallbackInfo &info) {
  unmountSession(info[0].As<Napi::External<Session>>().Data());
  return info.Env().Undefined();
}

// destroy(session): after OP_CLOSED and once no request is left unanswered; a connection
// the kernel ended with no unmount of ours (an abort) is unmounted here.
Napi::Value Destroy(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  if (!s->destroyed) {
    s->destroyed = true;
    unmountSession(s);
    stopPolling(s);
    {
      std::lock_guard<std::mutex> g(s->rmu);
      s->rstop = true;
    }
    s->rcv.notify_one();
    pthread_join(s->replier, nullptr);
    s->closing.store(true);
    while (s->answering.load()) sched_yield();
    fuse_session_destroy(s->se);
    free(s->buf.mem);
    s->buf.mem = nullptr;
    close(s->fd);
    s->dispatch.Reset();
    delete s->async;
    s->async = nullptr;
  }
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  std::atexit(unmountAllAtExit);
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("unmount", Napi::Function::New(env, Unmount));
  exports.Set("invalAttr", Napi::Function::New(env, InvalAttr));
  exports.Set("invalInode", Napi::Function::New(env, InvalInode));
  exports.Set("invalEntry", Napi::Function::New(env, InvalEntry));
  exports.Set("destroy", Napi::Function::New(env, Destroy));
  addReplies(env, exports);
  return exports;
}

}  // namespace
}  // namespace vsm_fuse

using vsm_fuse::Init;
NODE_API_MODULE(vsm_fuse, Init)
