// vsm_fuse: the FUSE view's own binding, on libfuse3's low-level API.
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
// in user space; a READ is answered straight from the Buffer JavaScript filled.
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
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <napi.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>
#include <set>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

namespace {

// Keep in step with OPS in src/virtualizer/fuse-lowlevel.ts.
enum Op {
  OP_CLOSED = 0, OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR,
  OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_FLUSH,
  OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_STATFS, OP_SETXATTR,
  OP_GETXATTR, OP_LISTXATTR, OP_REMOVEXATTR, OP_CREATE, OP_FALLOCATE, OP_LSEEK,
  OP_COPY_FILE_RANGE, OP_IOCTL,
};

constexpr uint32_t REQ_MAGIC = 0x5653524bu;
// libfuse 3.14's session buffer: FUSE_MAX_MAX_PAGES pages plus a header page.
constexpr int64_t RECV_BUF = 256 * 4096 + 4096;
// Smaller writes are copied instead: handing over a 1 MiB buffer for 4 KiB of data made V8
// count 1 MiB of external memory per write, and garbage collection took 11% of the main
// thread under 4 KiB random writes (--cpu-prof).
constexpr size_t STEAL_MIN = 64 * 1024;

struct Session;

// One kernel request on its way to JavaScript and back. Which fields mean what
// depends on op; see the argument list in CallJs.
struct Req {
  uint32_t magic = REQ_MAGIC;
  Session *s = nullptr;
  fuse_req_t req = nullptr;
  int op = 0;
  double ino = 0, ino2 = 0, fh = 0, fh2 = 0, off = 0, off2 = 0, size = 0, flags = 0, mode = 0;
  std::string name, name2;
  char *mem = nullptr;   // owned allocation holding data (freed with the JS Buffer)
  int64_t memSize = 0;   // its size, as reported to V8
  char *data = nullptr;
  size_t dlen = 0;
  bool hasData = false;
  uint32_t uid = 0, gid = 0, pid = 0;
};

std::mutex g_live_mu;
std::set<std::string> g_live_mounts; // unmounted lazily at exit(), even after an uncaught error

struct Session {
  fuse_session *se = nullptr;
  std::string mountpoint;
  int fd = -1;            // the duplicate of the mount's descriptor that requests are read from and answered on
  napi_env env = nullptr;
  Napi::FunctionReference dispatch;
  Napi::AsyncContext *async = nullptr;
  uv_poll_t poll{};
  bool polling = false;
  fuse_buf buf{};         // the receive buffer
  bool unmounted = false;
  bool destroyed = false;
  std::atomic<uint64_t> initUnique{0}; // the kernel's INIT request, while it offers KILLPRIV_V2
  // the replier thread's queue of WRITE answers (request, byte count)
  std::mutex rmu;
  std::condition_variable rcv;
  std::vector<std::pair<Req *, size_t>> rq;
  bool rstop = false;
  bool rsleeping = false;
  pthread_t replier{};
};

// Of the request being dispatched (one at a time, on the main thread):
bool g_steal = false; // a WRITE took the receive buffer
bool g_kill = false;  // it carries a KILL_SUIDGID flag

Req *newReq(fuse_req_t req, int op, fuse_ino_t ino) {
  auto *s = static_cast<Session *>(fuse_req_userdata(req));
  Req *r = new Req();
  r->s = s;
  r->req = req;
  r->op = op;
  r->ino = static_cast<double>(ino);
  const fuse_ctx *c = fuse_req_ctx(req);
  r->uid = c->uid;
  r->gid = c->gid;
  r->pid = c->pid;
  return r;
}

void callJs(Req *r);
void send(Req *r) { callJs(r); }

void copyData(Req *r, const void *p, size_t n) {
  r->mem = static_cast<char *>(malloc(n ? n : 1));
  if (n) memcpy(r->mem, p, n);
  r->data = r->mem;
  r->dlen = n;
  r->memSize = static_cast<int64_t>(n);
  r->hasData = true;
}

// ---------------------------------------------------------------- libfuse callbacks (main thread, from onReadable)

void ll_init(void *userdata, fuse_conn_info *conn) {
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_WRITEBACK_CACHE);
  // the reply will carry KILLPRIV_V2 instead (ioWritev), which leaves no room for the first version's rules
  if (static_cast<Session *>(userdata)->initUnique) conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
}
void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_LOOKUP, parent); r->name = name; send(r);
}
void forget(Session *s, fuse_ino_t ino, uint64_t n) {
  Req *r = new Req();
  r->s = s; r->op = OP_FORGET; r->ino = static_cast<double>(ino); r->size = static_cast<double>(n);
  send(r);
}
void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  forget(static_cast<Session *>(fuse_req_userdata(req)), ino, n);
  fuse_reply_none(req);
}
void ll_forget_multi(fuse_req_t req, size_t count, fuse_forget_data *forgets) {
  auto *s = static_cast<Session *>(fuse_req_userdata(req));
  for (size_t i = 0; i < count; i++) forget(s, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}
void ll_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info *) { send(newReq(req, OP_GETATTR, ino)); }
void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a, int to_set, fuse_file_info *fi) {
  Req *r = newReq(req, OP_SETATTR, ino);
  r->flags = to_set;
  r->mode = a->st_mode;
  r->ino2 = a->st_uid;
  r->fh2 = a->st_gid;
  r->size = static_cast<double>(a->st_size);
  r->off = a->st_atim.tv_sec * 1e3 + a->st_atim.tv_nsec / 1e6;
  r->off2 = a->st_mtim.tv_sec * 1e3 + a->st_mtim.tv_nsec / 1e6;
  r->fh = fi ? static_cast<double>(fi->fh) : -1;
  send(r);
}
void ll_readlink(fuse_req_t req, fuse_ino_t ino) { send(newReq(req, OP_READLINK, ino)); }
void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  Req *r = newReq(req, OP_MKNOD, parent); r->name = name; r->mode = mode; r->size = static_cast<double>(rdev); send(r);
}
void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  Req *r = newReq(req, OP_MKDIR, parent); r->name = name; r->mode = mode; send(r);
}
void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_UNLINK, parent); r->name = name; send(r);
}
void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_RMDIR, parent); r->name = name; send(r);
}
void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_SYMLINK, parent); r->name = name; r->name2 = link; send(r);
}
void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  Req *r = newReq(req, OP_RENAME, parent);
  r->name = name; r->ino2 = static_cast<double>(newparent); r->name2 = newname; r->flags = flags;
  send(r);
}
void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  Req *r = newReq(req, OP_LINK, ino); r->ino2 = static_cast<double>(newparent); r->name = newname; send(r);
}
void ll_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_OPEN, ino); r->flags = fi->flags; r->mode = g_kill; send(r);
}
void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) {
  Req *r = newReq(req, OP_READ, ino);
  r->fh = static_cast<double>(fi->fh); r->size = static_cast<double>(size); r->off = static_cast<double>(off);
  send(r);
}
void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, fuse_file_info *fi) {
  Req *r = newReq(req, OP_WRITE, ino);
  r->fh = static_cast<double>(fi->fh); r->off = static_cast<double>(off); r->flags = g_kill;
  const fuse_buf &rb = r->s->buf;
  if (size >= STEAL_MIN && rb.mem && buf >= static_cast<char *>(rb.mem) && buf + size <= static_cast<char *>(rb.mem) + rb.size) {
    // A large payload lies in the receive buffer: the request takes the buffer.
    r->mem = static_cast<char *>(rb.mem);
    r->data = const_cast<char *>(buf);
    r->dlen = size;
    r->memSize = RECV_BUF;
    r->hasData = true;
    g_steal = true;
  } else {
    copyData(r, buf, size);
  }
  send(r);
}
void ll_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FLUSH, ino); r->fh = static_cast<double>(fi->fh); send(r);
}
void ll_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_RELEASE, ino); r->fh = static_cast<double>(fi->fh); send(r);
}
void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FSYNC, ino); r->fh = static_cast<double>(fi->fh); r->flags = datasync; send(r);
}
void ll_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *) { send(newReq(req, OP_OPENDIR, ino)); }
void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) {
  Req *r = newReq(req, OP_READDIR, ino);
  r->fh = static_cast<double>(fi->fh); r->size = static_cast<double>(size); r->off = static_cast<double>(off);
  send(r);
}
void ll_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_RELEASEDIR, ino); r->fh = static_cast<double>(fi->fh); send(r);
}
void ll_statfs(fuse_req_t req, fuse_ino_t ino) { send(newReq(req, OP_STATFS, ino)); }
void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  Req *r = newReq(req, OP_SETXATTR, ino); r->name = name; r->flags = flags; copyData(r, value, size); send(r);
}
void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  Req *r = newReq(req, OP_GETXATTR, ino); r->name = name; r->size = static_cast<double>(size); send(r);
}
void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Req *r = newReq(req, OP_LISTXATTR, ino); r->size = static_cast<double>(size); send(r);
}
void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  Req *r = newReq(req, OP_REMOVEXATTR, ino); r->name = name; send(r);
}
void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, fuse_file_info *fi) {
  Req *r = newReq(req, OP_CREATE, parent); r->name = name; r->mode = mode; r->flags = fi->flags; send(r);
}
void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FALLOCATE, ino);
  r->fh = static_cast<double>(fi->fh); r->flags = mode; r->off = static_cast<double>(offset); r->size = static_cast<double>(length);
  send(r);
}
void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info *fi) {
  Req *r = newReq(req, OP_LSEEK, ino); r->fh = static_cast<double>(fi->fh); r->off = static_cast<double>(off); r->flags = whence; send(r);
}
void ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info *fi_in, fuse_ino_t ino_out,
                        off_t off_out, fuse_file_info *fi_out, size_t len, int flags) {
  Req *r = newReq(req, OP_COPY_FILE_RANGE, ino_in);
  r->fh = static_cast<double>(fi_in->fh); r->off = static_cast<double>(off_in);
  r->ino2 = static_cast<double>(ino_out); r->fh2 = static_cast<double>(fi_out->fh); r->off2 = static_cast<double>(off_out);
  r->size = static_cast<double>(len); r->flags = flags;
  send(r);
}
void ll_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *, fuse_file_info *fi, unsigned flags,
              const void *in_buf, size_t in_bufsz, size_t out_bufsz) {
  if (flags & FUSE_IOCTL_COMPAT) { fuse_reply_err(req, ENOSYS); return; }
  Req *r = newReq(req, OP_IOCTL, ino);
  r->fh = static_cast<double>(fi->fh); r->flags = cmd; r->size = static_cast<double>(out_bufsz);
  copyData(r, in_buf, in_bufsz);
  send(r);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops o{};
  o.init = ll_init;
  o.lookup = ll_lookup;
  o.forget = ll_forget;
  o.forget_multi = ll_forget_multi;
  o.getattr = ll_getattr;
  o.setattr = ll_setattr;
  o.readlink = ll_readlink;
  o.mknod = ll_mknod;
  o.mkdir = ll_mkdir;
  o.unlink = ll_unlink;
  o.rmdir = ll_rmdir;
  o.symlink = ll_symlink;
  o.rename = ll_rename;
  o.link = ll_link;
  o.open = ll_open;
  o.read = ll_read;
  o.write = ll_write;
  o.flush = ll_flush;
  o.release = ll_release;
  o.fsync = ll_fsync;
  o.opendir = ll_opendir;
  o.readdir = ll_readdir;
  o.releasedir = ll_releasedir;
  o.statfs = ll_statfs;
  o.setxattr = ll_setxattr;
  o.getxattr = ll_getxattr;
  o.listxattr = ll_listxattr;
  o.removexattr = ll_removexattr;
  o.create = ll_create;
  o.fallocate = ll_fallocate;
  o.lseek = ll_lseek;
  o.copy_file_range = ll_copy_file_range;
  o.ioctl = ll_ioctl;
  return o;
}();

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

void done(Req *r);

// Sends the queued WRITE answers in order; at stop, sends what is left and ends.
void *replier(void *arg) {
  auto *s = static_cast<Session *>(arg);
  std::vector<std::pair<Req *, size_t>> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> g(s->rmu);
      s->rsleeping = true;
      s->rcv.wait(g, [s] { return !s->rq.empty() || s->rstop; });
      s->rsleeping = false;
      if (s->rq.empty()) return nullptr;
      batch.swap(s->rq);
    }
    for (auto &[r, n] : batch) {
      fuse_reply_write(r->req, n);
      done(r);
    }
    batch.clear();
  }
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

// ---------------------------------------------------------------- JS side (main thread)

struct Owned { char *mem; int64_t size; };

void freeMem(Napi::Env env, char *, Owned *o) {
  free(o->mem);
  Napi::MemoryManagement::AdjustExternalMemory(env, -o->size);
  delete o;
}

// Hands r to JavaScript's dispatch; called on the main thread inside onReadable's scopes.
void callJs(Req *r) {
  Napi::Env env(r->s->env);
  Napi::Function fn = r->s->dispatch.Value();
  Napi::Value undef = env.Undefined();
  Napi::Value data = undef;
  if (r->hasData) {
    Napi::MemoryManagement::AdjustExternalMemory(env, r->memSize);
    data = Napi::Buffer<char>::New(env, r->data, r->dlen, freeMem, new Owned{r->mem, r->memSize});
    r->mem = nullptr;
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
  };
  if (noReply) delete r;
  fn.Call(args);
  // as for any callback from the event loop: an exception is the process's uncaught one
  if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
}

Req *reqArg(const Napi::CallbackInfo &info) {
  auto *r = reinterpret_cast<Req *>(static_cast<uintptr_t>(info[0].As<Napi::Number>().Int64Value()));
  if (!r || r->magic != REQ_MAGIC) {
    Napi::Error::Fatal("vsm_fuse", "reply to an unknown or already answered request");
  }
  return r;
}

void done(Req *r) {
  r->magic = 0;
  free(r->mem);
  delete r;
}

// attr array: [ino, mode, nlink, uid, gid, rdev, size, blocks, blksize, atimeMs, mtimeMs, ctimeMs]
void toStat(Napi::Array a, struct stat *st) {
  memset(st, 0, sizeof *st);
  auto n = [&](uint32_t i) { return a.Get(i).As<Napi::Number>().DoubleValue(); };
  auto ts = [&](uint32_t i, struct timespec *t) {
    double ms = n(i);
    t->tv_sec = static_cast<time_t>(ms / 1000);
    t->tv_nsec = static_cast<long>((ms - t->tv_sec * 1000.0) * 1e6);
    if (t->tv_nsec < 0) t->tv_nsec = 0;
  };
  st->st_ino = static_cast<ino_t>(n(0));
  st->st_mode = static_cast<mode_t>(n(1));
  st->st_nlink = static_cast<nlink_t>(n(2));
  st->st_uid = static_cast<uid_t>(n(3));
  st->st_gid = static_cast<gid_t>(n(4));
  st->st_rdev = static_cast<dev_t>(n(5));
  st->st_size = static_cast<off_t>(n(6));
  st->st_blocks = static_cast<blkcnt_t>(n(7));
  st->st_blksize = static_cast<blksize_t>(n(8));
  ts(9, &st->st_atim);
  ts(10, &st->st_mtim);
  ts(11, &st->st_ctim);
}

fuse_entry_param toEntry(const Napi::CallbackInfo &info, uint32_t at) {
  fuse_entry_param e{};
  toStat(info[at].As<Napi::Array>(), &e.attr);
  e.ino = e.attr.st_ino;
  double t = info[at + 1].As<Napi::Number>().DoubleValue();
  e.attr_timeout = t;
  e.entry_timeout = t;
  return e;
}

void setOpenFlags(fuse_file_info *fi, uint32_t f) {
  fi->direct_io = (f & 1) ? 1 : 0;
  fi->keep_cache = (f & 2) ? 1 : 0;
}

Napi::Value ReplyErr(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_reply_err(r->req, info[1].As<Napi::Number>().Int32Value());
  done(r);
  return info.Env().Undefined();
}
Napi::Value ReplyEntry(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_entry_param e = toEntry(info, 1);
  fuse_reply_entry(r->req, &e);
  done(r);
  return info.Env().Undefined();
}
// (req, attr, timeout, fh, openFlags)
Napi::Value ReplyCreate(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_entry_param e = toEntry(info, 1);
  fuse_file_info fi{};
  fi.fh = static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value());
  setOpenFlags(&fi, info[4].As<Napi::Number>().Uint32Value());
  fuse_reply_create(r->req, &e, &fi);
  done(r);
  return info.Env().Undefined();
}
// (req, attr, timeout)
Napi::Value ReplyAttr(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  struct stat st;
  toStat(info[1].As<Napi::Array>(), &st);
  fuse_reply_attr(r->req, &st, info[2].As<Napi::Number>().DoubleValue());
  done(r);
  return info.Env().Undefined();
}
// (req, fh, openFlags)
Napi::Value ReplyOpen(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_file_info fi{};
  fi.fh = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
  setOpenFlags(&fi, info[2].As<Napi::Number>().Uint32Value());
  fuse_reply_open(r->req, &fi);
  done(r);
  return info.Env().Undefined();
}
// (req, buffer, length)
Napi::Value ReplyBuf(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  auto b = info[1].As<Napi::Buffer<char>>();
  size_t n = info[2].As<Napi::Number>().Uint32Value();
  if (n > b.Length()) n = b.Length();
  fuse_reply_buf(r->req, b.Data(), n);
  done(r);
  return info.Env().Undefined();
}
// (req, count)
// (buffer): the data of a WRITE that JavaScript is done with. Detaching its ArrayBuffer
// frees the memory now: left to the garbage collector, 1 MiB per request of external
// memory set off a full mark-compact every 25 ms under 1 MiB sequential writes.
Napi::Value ReleaseData(const Napi::CallbackInfo &info) {
  Napi::ArrayBuffer ab = info[0].As<Napi::Buffer<char>>().ArrayBuffer();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}
Napi::Value ReplyWrite(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_reply_write(r->req, static_cast<size_t>(info[1].As<Napi::Number>().Int64Value()));
  done(r);
  return info.Env().Undefined();
}
// (req, count): as replyWrite, sent by the replier thread; the thread is woken only
// when it sleeps, so answers queued while it works cost a push each.
Napi::Value ReplyWriteLater(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  size_t n = static_cast<size_t>(info[1].As<Napi::Number>().Int64Value());
  r->magic = 0; // answered, as far as JavaScript is concerned
  Session *s = r->s;
  bool wake;
  {
    std::lock_guard<std::mutex> g(s->rmu);
    s->rq.emplace_back(r, n);
    wake = s->rsleeping;
  }
  if (wake) s->rcv.notify_one();
  return info.Env().Undefined();
}
// (req, [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax])
Napi::Value ReplyStatfs(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  auto a = info[1].As<Napi::Array>();
  auto n = [&](uint32_t i) { return a.Get(i).As<Napi::Number>().DoubleValue(); };
  struct statvfs v{};
  v.f_bsize = static_cast<unsigned long>(n(0));
  v.f_frsize = static_cast<unsigned long>(n(1));
  v.f_blocks = static_cast<fsblkcnt_t>(n(2));
  v.f_bfree = static_cast<fsblkcnt_t>(n(3));
  v.f_bavail = static_cast<fsblkcnt_t>(n(4));
  v.f_files = static_cast<fsfilcnt_t>(n(5));
  v.f_ffree = static_cast<fsfilcnt_t>(n(6));
  v.f_favail = static_cast<fsfilcnt_t>(n(7));
  v.f_namemax = static_cast<unsigned long>(n(8));
  fuse_reply_statfs(r->req, &v);
  done(r);
  return info.Env().Undefined();
}
// (req, size): the size an xattr value or list needs, for a size query
Napi::Value ReplyXattr(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_reply_xattr(r->req, static_cast<size_t>(info[1].As<Napi::Number>().Int64Value()));
  done(r);
  return info.Env().Undefined();
}
Napi::Value ReplyLseek(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  fuse_reply_lseek(r->req, static_cast<off_t>(info[1].As<Napi::Number>().Int64Value()));
  done(r);
  return info.Env().Undefined();
}
// (req, result, buffer | undefined)
Napi::Value ReplyIoctl(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  int result = info[1].As<Napi::Number>().Int32Value();
  if (info[2].IsBuffer()) {
    auto b = info[2].As<Napi::Buffer<char>>();
    fuse_reply_ioctl(r->req, result, b.Data(), b.Length());
  } else {
    fuse_reply_ioctl(r->req, result, nullptr, 0);
  }
  done(r);
  return info.Env().Undefined();
}
Napi::Value ReplyReadlink(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  std::string s = info[1].As<Napi::String>().Utf8Value();
  fuse_reply_readlink(r->req, s.c_str());
  done(r);
  return info.Env().Undefined();
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
    {
      std::lock_guard<std::mutex> g(g_live_mu);
      g_live_mounts.erase(mnt);
    }
    delete s;
    Napi::Error::New(env, std::string("cannot watch the FUSE session at ") + mnt + ": " + strerror(err)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
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

// unmount(session): detach the mount; OP_CLOSED follows when the kernel ends the connection.
Napi::Value Unmount(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  if (!s->unmounted) {
    s->unmounted = true;
    fuse_session_unmount(s->se);
    std::lock_guard<std::mutex> g(g_live_mu);
    g_live_mounts.erase(s->mountpoint);
  }
  return info.Env().Undefined();
}

// destroy(session): after OP_CLOSED and once no request is left unanswered.
Napi::Value Destroy(const Napi::CallbackInfo &info) {
  auto *s = info[0].As<Napi::External<Session>>().Data();
  if (!s->destroyed) {
    s->destroyed = true;
    stopPolling(s);
    {
      std::lock_guard<std::mutex> g(s->rmu);
      s->rstop = true;
    }
    s->rcv.notify_one();
    pthread_join(s->replier, nullptr);
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
  exports.Set("destroy", Napi::Function::New(env, Destroy));
  exports.Set("replyErr", Napi::Function::New(env, ReplyErr));
  exports.Set("replyEntry", Napi::Function::New(env, ReplyEntry));
  exports.Set("replyCreate", Napi::Function::New(env, ReplyCreate));
  exports.Set("replyAttr", Napi::Function::New(env, ReplyAttr));
  exports.Set("replyOpen", Napi::Function::New(env, ReplyOpen));
  exports.Set("replyBuf", Napi::Function::New(env, ReplyBuf));
  exports.Set("replyWrite", Napi::Function::New(env, ReplyWrite));
  exports.Set("replyWriteLater", Napi::Function::New(env, ReplyWriteLater));
  exports.Set("releaseData", Napi::Function::New(env, ReleaseData));
  exports.Set("replyStatfs", Napi::Function::New(env, ReplyStatfs));
  exports.Set("replyXattr", Napi::Function::New(env, ReplyXattr));
  exports.Set("replyLseek", Napi::Function::New(env, ReplyLseek));
  exports.Set("replyIoctl", Napi::Function::New(env, ReplyIoctl));
  exports.Set("replyReadlink", Napi::Function::New(env, ReplyReadlink));
  return exports;
}

}  // namespace

NODE_API_MODULE(vsm_fuse, Init)
