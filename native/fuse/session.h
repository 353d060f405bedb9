// The vsm_fuse addon's shared parts: the request a kernel message becomes on its way to
// JavaScript and back (Req), the mounted session (Session), and what the three files
// give each other. session.cc runs the session (mount, the read loop on the main
// thread, the hand-over to JavaScript); requests.cc turns libfuse's low-level callbacks
// into Reqs; replies.cc answers them when JavaScript calls reply*(req, ...).
#pragma once
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <napi.h>

#include "../ack.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>
#include <pthread.h>
#include <uv.h>

namespace vsm_fuse {

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
  double nsec = 0, nsec2 = 0; // setattr: off and off2 are atime's and mtime's seconds, these their nanoseconds
  std::string name, name2;
  char *mem = nullptr;   // owned allocation holding data (freed with the JS Buffer); none: data is borrowed, copied when handed over
  int64_t memSize = 0;   // its size, as reported to V8
  char *data = nullptr;
  size_t dlen = 0;
  bool hasData = false;
  uint32_t uid = 0, gid = 0, pid = 0;
  VsmAck *ack = nullptr; // a WRITE's early answer, once JavaScript asked for one (writeAck)
};


struct Session {
  fuse_session *se = nullptr;
  std::string mountpoint;
  std::string dev;        // the mount's device ("major:minor"), to tell it from a later mount at mountpoint
  int fd = -1;            // the duplicate of the mount's descriptor that requests are read from and answered on
  napi_env env = nullptr;
  Napi::FunctionReference dispatch;
  Napi::AsyncContext *async = nullptr;
  uv_poll_t poll{};
  bool polling = false;
  fuse_buf buf{};         // the receive buffer
  bool unmounted = false;
  bool destroyed = false;
  // early answers (ack.h) being sent by the write threads, and whether destroy has begun:
  // an aborted connection (OP_CLOSED with writes still in flight) lets destroy run while
  // a write thread is about to answer; it must not answer through a freed session or on
  // a closed descriptor that another file may have been given since
  std::atomic<int> answering{0};
  std::atomic<bool> closing{false};
  std::atomic<uint64_t> initUnique{0}; // the kernel's INIT request, while it offers KILLPRIV_V2
  // the replier thread's queue of WRITE answers (request, byte count)
  std::mutex rmu;
  std::condition_variable rcv;
  std::vector<std::pair<Req *, size_t>> rq;
  bool rstop = false;
  bool rsleeping = false;
  pthread_t replier{};
};

// Of the request being dispatched (one at a time, on the main thread; requests.cc):
extern bool g_steal; // a WRITE took the receive buffer
extern bool g_kill;  // it carries a KILL_SUIDGID flag

// requests.cc: libfuse's operation table.
extern const fuse_lowlevel_ops kOps;
// session.cc: hands r to JavaScript's dispatch (main thread, inside the read loop's scopes).
void callJs(Req *r);
// replies.cc: the replier thread's body (started by mount), the reply* exports, and
// freeing an answered request.
void *replier(void *session);
void addReplies(Napi::Env env, Napi::Object exports);
void done(Req *r);

}  // namespace vsm_fuse
