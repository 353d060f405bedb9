// The libfuse low-level callbacks (main thread, called from the read loop in
// session.cc): each turns a kernel request into a Req and hands it to JavaScript; a
// large WRITE's payload is the receive buffer itself (see session.cc's header).
#include "session.h"

#include <cstdlib>
#include <cstring>
#include <linux/fuse.h>
#include <sys/stat.h>

namespace vsm_fuse {

bool g_steal = false;
bool g_kill = false;

namespace {

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

// The data lies in the receive buffer: callJs, called before the next request is read,
// copies it into a Buffer of V8's own.
void borrowData(Req *r, const void *p, size_t n) {
  r->data = static_cast<char *>(const_cast<void *>(p));
  r->dlen = n;
  r->hasData = true;
}

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
  Req *r = newReq(req, OP_LOOKUP, parent); r->name = name; callJs(r);
}
void forget(Session *s, fuse_ino_t ino, uint64_t n) {
  Req *r = new Req();
  r->s = s; r->op = OP_FORGET; r->ino = static_cast<double>(ino); r->size = static_cast<double>(n);
  callJs(r);
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
void ll_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info *) { callJs(newReq(req, OP_GETATTR, ino)); }
void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *a, int to_set, fuse_file_info *fi) {
  Req *r = newReq(req, OP_SETATTR, ino);
  r->flags = to_set;
  r->mode = a->st_mode;
  r->ino2 = a->st_uid;
  r->fh2 = a->st_gid;
  r->size = static_cast<double>(a->st_size);
  r->off = static_cast<double>(a->st_atim.tv_sec);
  r->nsec = static_cast<double>(a->st_atim.tv_nsec);
  r->off2 = static_cast<double>(a->st_mtim.tv_sec);
  r->nsec2 = static_cast<double>(a->st_mtim.tv_nsec);
  r->fh = fi ? static_cast<double>(fi->fh) : -1;
  callJs(r);
}
void ll_readlink(fuse_req_t req, fuse_ino_t ino) { callJs(newReq(req, OP_READLINK, ino)); }
void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  Req *r = newReq(req, OP_MKNOD, parent); r->name = name; r->mode = mode; r->size = static_cast<double>(rdev); callJs(r);
}
void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  Req *r = newReq(req, OP_MKDIR, parent); r->name = name; r->mode = mode; callJs(r);
}
void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_UNLINK, parent); r->name = name; callJs(r);
}
void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_RMDIR, parent); r->name = name; callJs(r);
}
void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  Req *r = newReq(req, OP_SYMLINK, parent); r->name = name; r->name2 = link; callJs(r);
}
void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  Req *r = newReq(req, OP_RENAME, parent);
  r->name = name; r->ino2 = static_cast<double>(newparent); r->name2 = newname; r->flags = flags;
  callJs(r);
}
void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  Req *r = newReq(req, OP_LINK, ino); r->ino2 = static_cast<double>(newparent); r->name = newname; callJs(r);
}
void ll_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_OPEN, ino); r->flags = fi->flags; r->mode = g_kill; callJs(r);
}
void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) {
  Req *r = newReq(req, OP_READ, ino);
  r->fh = static_cast<double>(fi->fh); r->size = static_cast<double>(size); r->off = static_cast<double>(off);
  callJs(r);
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
    borrowData(r, buf, size);
  }
  callJs(r);
}
void ll_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FLUSH, ino); r->fh = static_cast<double>(fi->fh); callJs(r);
}
void ll_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_RELEASE, ino); r->fh = static_cast<double>(fi->fh); callJs(r);
}
void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FSYNC, ino); r->fh = static_cast<double>(fi->fh); r->flags = datasync; callJs(r);
}
void ll_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *) { callJs(newReq(req, OP_OPENDIR, ino)); }
void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) {
  Req *r = newReq(req, OP_READDIR, ino);
  r->fh = static_cast<double>(fi->fh); r->size = static_cast<double>(size); r->off = static_cast<double>(off);
  callJs(r);
}
void ll_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) {
  Req *r = newReq(req, OP_RELEASEDIR, ino); r->fh = static_cast<double>(fi->fh); callJs(r);
}
void ll_statfs(fuse_req_t req, fuse_ino_t ino) { callJs(newReq(req, OP_STATFS, ino)); }
void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  Req *r = newReq(req, OP_SETXATTR, ino); r->name = name; r->flags = flags; borrowData(r, value, size); callJs(r);
}
void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  Req *r = newReq(req, OP_GETXATTR, ino); r->name = name; r->size = static_cast<double>(size); callJs(r);
}
void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Req *r = newReq(req, OP_LISTXATTR, ino); r->size = static_cast<double>(size); callJs(r);
}
void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  Req *r = newReq(req, OP_REMOVEXATTR, ino); r->name = name; callJs(r);
}
void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, fuse_file_info *fi) {
  Req *r = newReq(req, OP_CREATE, parent); r->name = name; r->mode = mode; r->flags = fi->flags; callJs(r);
}
void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info *fi) {
  Req *r = newReq(req, OP_FALLOCATE, ino);
  r->fh = static_cast<double>(fi->fh); r->flags = mode; r->off = static_cast<double>(offset); r->size = static_cast<double>(length);
  callJs(r);
}
void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info *fi) {
  Req *r = newReq(req, OP_LSEEK, ino); r->fh = static_cast<double>(fi->fh); r->off = static_cast<double>(off); r->flags = whence; callJs(r);
}
void ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info *fi_in, fuse_ino_t ino_out,
                        off_t off_out, fuse_file_info *fi_out, size_t len, int flags) {
  Req *r = newReq(req, OP_COPY_FILE_RANGE, ino_in);
  r->fh = static_cast<double>(fi_in->fh); r->off = static_cast<double>(off_in);
  r->ino2 = static_cast<double>(ino_out); r->fh2 = static_cast<double>(fi_out->fh); r->off2 = static_cast<double>(off_out);
  r->size = static_cast<double>(len); r->flags = flags;
  callJs(r);
}
void ll_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *, fuse_file_info *fi, unsigned flags,
              const void *in_buf, size_t in_bufsz, size_t out_bufsz) {
  if (flags & FUSE_IOCTL_COMPAT) { fuse_reply_err(req, ENOSYS); return; }
  Req *r = newReq(req, OP_IOCTL, ino);
  r->fh = static_cast<double>(fi->fh); r->flags = cmd; r->size = static_cast<double>(out_bufsz);
  borrowData(r, in_buf, in_bufsz);
  callJs(r);
}

}  // namespace

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

}  // namespace vsm_fuse
