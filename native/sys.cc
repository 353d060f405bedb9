// vsm_sys: the few system calls the daemon needs that Node does not offer.
// flock(fd, op) holds the one-daemon-per-home lock; peercred(fd) reads the
// uid/gid/pid of the process at the other end of a unix socket (SO_PEERCRED), which
// the control server authorises commands by. Errors are thrown as Error objects with
// the errno name in .code, as Node's own fs errors are.
#include <napi.h>
#include <cerrno>
#include <cstring>
#include <string>
#include <sys/file.h>
#include <sys/socket.h>

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
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
