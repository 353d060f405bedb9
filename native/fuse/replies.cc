// The answers to requests (main thread, from JavaScript's reply*(req, ...) calls; a
// WRITE's answer may go to the replier thread instead): each writes the answer to
// /dev/fuse through libfuse and frees the Req. A WRITE given an early answer (writeAck,
// ../ack.h) may have been answered already, by the write thread (../sys.cc) that wrote its
// last piece: the reply then only frees the Req.
#include "session.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <sys/statvfs.h>

namespace vsm_fuse {

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

void done(Req *r) {
  r->magic = 0;
  free(r->mem);
  if (r->ack) vsmAckRelease(r->ack);
  delete r;
}

namespace {

// A WRITE's early answer (ack.h): the fuse request and the count it answers with.
struct FuseAck : VsmAck {
  Session *s;
  fuse_req_t req;
  size_t n;
};

std::atomic<uint64_t> g_early{0};

void answerWrite(VsmAck *a) {
  auto *f = static_cast<FuseAck *>(a);
  // seq_cst both ways with Destroy: either it sees this answer under way and waits for
  // it, or this sees it closing and sends nothing
  f->s->answering.fetch_add(1);
  if (!f->s->closing.load()) {
    fuse_reply_write(f->req, f->n);
    g_early.fetch_add(1, std::memory_order_relaxed);
  }
  f->s->answering.fetch_sub(1);
}

// earlyAnswers() -> WRITEs answered by the thread that wrote their last piece, so far
Napi::Value EarlyAnswers(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_early.load(std::memory_order_relaxed)));
}

void destroyAck(VsmAck *a) { delete static_cast<FuseAck *>(a); }

// The request a reply is for; null when its early answer has gone already (the Req is
// then freed here, and the reply sends nothing).
Req *reqArg(const Napi::CallbackInfo &info) {
  auto *r = reinterpret_cast<Req *>(static_cast<uintptr_t>(info[0].As<Napi::Number>().Int64Value()));
  if (!r || r->magic != REQ_MAGIC) {
    Napi::Error::Fatal("vsm_fuse", "reply to an unknown or already answered request");
  }
  if (r->ack && r->ack->claimed.exchange(true)) {
    done(r);
    return nullptr;
  }
  return r;
}

// writeAck(req) -> the early answer of a WRITE (ack.h), answering with its data's length:
// JavaScript hands it down with the write, and pwriteBatch with each device write.
Napi::Value WriteAck(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
  if (r->op != OP_WRITE || r->ack) Napi::Error::Fatal("vsm_fuse", "writeAck: not a WRITE, or one that has its answer already");
  auto *a = new FuseAck();
  a->s = r->s;
  a->req = r->req;
  a->n = r->dlen;
  a->answer = answerWrite;
  a->destroy = destroyAck;
  a->refs.store(2); // the External and the Req
  r->ack = a;
  return Napi::External<VsmAck>::New(info.Env(), a, [](Napi::Env, VsmAck *p) { vsmAckRelease(p); });
}

// ackSplit(ack, k): a piece of the write became k (k >= 1) on its way down.
Napi::Value AckSplit(const Napi::CallbackInfo &info) {
  auto *a = info[0].As<Napi::External<VsmAck>>().Data();
  a->left.fetch_add(info[1].As<Napi::Number>().Int32Value() - 1);
  return info.Env().Undefined();
}

// attr array: [ino, mode, nlink, uid, gid, rdev, size, blocks, blksize, atimeMs, mtimeMs, ctimeMs,
// atimeNs, mtimeNs]: times in whole epoch ms, the last two the nanoseconds within atime's and mtime's ms
void toStat(Napi::Array a, struct stat *st) {
  memset(st, 0, sizeof *st);
  auto n = [&](uint32_t i) { return a.Get(i).As<Napi::Number>().DoubleValue(); };
  auto ts = [&](uint32_t i, double ns, struct timespec *t) {
    int64_t ms = static_cast<int64_t>(std::floor(n(i)));
    int64_t sec = ms >= 0 ? ms / 1000 : -((999 - ms) / 1000); // floor, for times before 1970
    t->tv_sec = static_cast<time_t>(sec);
    t->tv_nsec = static_cast<long>((ms - sec * 1000) * 1000000 + static_cast<int64_t>(ns));
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
  ts(9, n(12), &st->st_atim);
  ts(10, n(13), &st->st_mtim);
  ts(11, 0, &st->st_ctim);
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

// (req, n): the replies that carry one number (an errno, a count, an offset)
template <typename T, int (*Send)(fuse_req_t, T)>
Napi::Value ReplyNumber(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
  Send(r->req, static_cast<T>(info[1].As<Napi::Number>().Int64Value()));
  done(r);
  return info.Env().Undefined();
}
Napi::Value ReplyEntry(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
  fuse_entry_param e = toEntry(info, 1);
  fuse_reply_entry(r->req, &e);
  done(r);
  return info.Env().Undefined();
}
// (req, attr, timeout, fh, openFlags)
Napi::Value ReplyCreate(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
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
  if (!r) return info.Env().Undefined();
  struct stat st;
  toStat(info[1].As<Napi::Array>(), &st);
  fuse_reply_attr(r->req, &st, info[2].As<Napi::Number>().DoubleValue());
  done(r);
  return info.Env().Undefined();
}
// (req, fh, openFlags)
Napi::Value ReplyOpen(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
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
  if (!r) return info.Env().Undefined();
  auto b = info[1].As<Napi::Buffer<char>>();
  size_t n = info[2].As<Napi::Number>().Uint32Value();
  if (n > b.Length()) n = b.Length();
  fuse_reply_buf(r->req, b.Data(), n);
  done(r);
  return info.Env().Undefined();
}
// (buffer): the data of a WRITE that JavaScript is done with. Detaching its ArrayBuffer
// frees the memory now: left to the garbage collector, 1 MiB per request of external
// memory set off a full mark-compact every 25 ms under 1 MiB sequential writes.
Napi::Value ReleaseData(const Napi::CallbackInfo &info) {
  Napi::ArrayBuffer ab = info[0].As<Napi::Buffer<char>>().ArrayBuffer();
  if (!ab.IsDetached()) ab.Detach();
  return info.Env().Undefined();
}
// (req, count): as replyWrite, sent by the replier thread; the thread is woken only
// when it sleeps, so answers queued while it works cost a push each.
Napi::Value ReplyWriteLater(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
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
  if (!r) return info.Env().Undefined();
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
// (req, result, buffer | undefined)
Napi::Value ReplyIoctl(const Napi::CallbackInfo &info) {
  Req *r = reqArg(info);
  if (!r) return info.Env().Undefined();
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
  if (!r) return info.Env().Undefined();
  std::string s = info[1].As<Napi::String>().Utf8Value();
  fuse_reply_readlink(r->req, s.c_str());
  done(r);
  return info.Env().Undefined();
}

}  // namespace

void addReplies(Napi::Env env, Napi::Object exports) {
  exports.Set("replyErr", Napi::Function::New(env, ReplyNumber<int, fuse_reply_err>));
  exports.Set("replyEntry", Napi::Function::New(env, ReplyEntry));
  exports.Set("replyCreate", Napi::Function::New(env, ReplyCreate));
  exports.Set("replyAttr", Napi::Function::New(env, ReplyAttr));
  exports.Set("replyOpen", Napi::Function::New(env, ReplyOpen));
  exports.Set("replyBuf", Napi::Function::New(env, ReplyBuf));
  exports.Set("replyWrite", Napi::Function::New(env, ReplyNumber<size_t, fuse_reply_write>));
  exports.Set("replyWriteLater", Napi::Function::New(env, ReplyWriteLater));
  exports.Set("releaseData", Napi::Function::New(env, ReleaseData));
  exports.Set("writeAck", Napi::Function::New(env, WriteAck));
  exports.Set("ackSplit", Napi::Function::New(env, AckSplit));
  exports.Set("earlyAnswers", Napi::Function::New(env, EarlyAnswers));
  exports.Set("replyStatfs", Napi::Function::New(env, ReplyStatfs));
  exports.Set("replyXattr", Napi::Function::New(env, ReplyNumber<size_t, fuse_reply_xattr>));  // a size query's answer
  exports.Set("replyLseek", Napi::Function::New(env, ReplyNumber<off_t, fuse_reply_lseek>));
  exports.Set("replyIoctl", Napi::Function::New(env, ReplyIoctl));
  exports.Set("replyReadlink", Napi::Function::New(env, ReplyReadlink));
}

}  // namespace vsm_fuse
