// The fallback FUSE binding: fuse-native (libfuse2's high-level API, paths, 128 KiB
// requests, every request on Node's main thread, no fallocate/lseek/ioctl). A thin
// adapter from its callback convention onto the view's operation table, and a watch on
// the mount: libfuse2's loop ends in fuse-native's own thread when the connection is
// aborted or the mount is taken away from outside, and tells nobody.
import { promises as fsp } from 'fs'
import type { Logger } from 'pino'
import type { TimeSpec } from '../fs'
import { ROOT_CALLER, callOp, type FuseOps } from './fuse-ops'
import type { FuseBinding, MountOptions } from './fuse-view'

// fuse-native ships no types; this is the part of it we use.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const Fuse = require('fuse-native')
type Cb = (code: number, value?: unknown) => void

/**
 * libfuse2 hands UTIME_NOW and UTIME_OMIT over as {0 s, (1 << 30) - 1 or - 2 ns}, which
 * fuse-native turns into the same 1073 ms: both read as "now". (fuse-native also passes
 * the atime as the mtime, so `touch -m -d` cannot work through it; the libfuse3 binding
 * carries both times and both flags.)
 */
const UTIME_SENTINEL_MS = Math.floor(((1 << 30) - 1) / 1e6)
const utimeOf = (ms: number): TimeSpec => (ms === UTIME_SENTINEL_MS ? 'now' : ms)

/** fuse-native's callbacks: (0, value) on success, (-errno) on failure; read/write answer with a count in the code position. */
function adapt(ops: FuseOps, log: Logger) {
  const run = <T>(name: string, cb: Cb, fn: () => T | Promise<T>) => callOp(log, name, fn, (v) => cb(0, v), cb)
  const done = <T>(name: string, cb: Cb, fn: () => T | Promise<T>) => callOp(log, name, fn, () => cb(0), cb)
  const count = (name: string, cb: Cb, fn: () => number | Promise<number>) => callOp(log, name, fn, (n) => cb(n), cb)
  return {
    init: (cb: Cb) => cb(0),
    statfs: (p: string, cb: Cb) => run('statfs', cb, () => ops.statfs(p)),
    getattr: (p: string, cb: Cb) => run('getattr', cb, () => ops.getattr(p)),
    fgetattr: (p: string, _fd: number, cb: Cb) => run('getattr', cb, () => ops.getattr(p)),
    readdir: (p: string, cb: Cb) => run('readdir', cb, () => ops.readdir(p)),
    open: (p: string, flags: number, cb: Cb) => run('open', cb, () => ops.open(p, flags)),
    create: (p: string, mode: number, cb: Cb) => run('create', cb, () => ops.create(p, mode, ROOT_CALLER)),
    release: (_p: string, fd: number, cb: Cb) => done('release', cb, () => ops.release(fd)),
    read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => count('read', cb, () => ops.read(fd, buf.subarray(0, len), pos)),
    write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => count('write', cb, () => ops.write(fd, buf.subarray(0, len), pos)),
    flush: (_p: string, fd: number, cb: Cb) => done('flush', cb, () => ops.flush(fd)),
    fsync: (_p: string, datasync: boolean, fd: number, cb: Cb) => done('fsync', cb, () => ops.fsync(fd, !!datasync)),
    truncate: (p: string, size: number, cb: Cb) => done('truncate', cb, () => ops.truncate(p, size)),
    ftruncate: (p: string, _fd: number, size: number, cb: Cb) => done('truncate', cb, () => ops.truncate(p, size)),
    unlink: (p: string, cb: Cb) => done('unlink', cb, () => ops.unlink(p)),
    rename: (a: string, b: string, cb: Cb) => done('rename', cb, () => ops.rename(a, b)),
    mkdir: (p: string, mode: number, cb: Cb) => done('mkdir', cb, () => ops.mkdir(p, mode, ROOT_CALLER)),
    rmdir: (p: string, cb: Cb) => done('rmdir', cb, () => ops.rmdir(p)),
    chmod: (p: string, mode: number, cb: Cb) => done('chmod', cb, () => ops.chmod(p, mode)),
    chown: (p: string, uid: number, gid: number, cb: Cb) => done('chown', cb, () => ops.chown(p, uid, gid)),
    utimens: (p: string, atime: number, mtime: number, cb: Cb) => done('utimens', cb, () => ops.utimens(p, utimeOf(atime), utimeOf(mtime))),
    getxattr: (p: string, name: string, _pos: number, cb: Cb) => run('getxattr', cb, () => ops.getxattr(p, name)),
    setxattr: (p: string, name: string, value: Buffer, _pos: number, flags: number, cb: Cb) =>
      done('setxattr', cb, () => ops.setxattr(p, name, value, flags)),
    listxattr: (p: string, cb: Cb) => run('listxattr', cb, () => ops.listxattr(p)),
    removexattr: (p: string, name: string, cb: Cb) => done('removexattr', cb, () => ops.removexattr(p, name)),
    link: (from: string, to: string, cb: Cb) => done('link', cb, () => ops.link(from, to)),
    symlink: (target: string, p: string, cb: Cb) => done('symlink', cb, () => ops.symlink(target, p, ROOT_CALLER)),
    readlink: (p: string, cb: Cb) => run('readlink', cb, () => ops.readlink(p)),
    mknod: (p: string, mode: number, rdev: number, cb: Cb) => done('mknod', cb, () => ops.mknod(p, mode, rdev, ROOT_CALLER)),
  }
}

/** statfs's f_type of a FUSE mount. */
const FUSE_SUPER_MAGIC = 0x65735546
/** How often the watch looks at the mount (ms): a statfs, which FUSE never answers from a cache. */
const WATCH_MS = 1000

/** lost: the connection ended with no unmount of ours (called once the dead mount is detached). */
export function fuseNativeBinding(mountpoint: string, ops: FuseOps, log: Logger, opts: MountOptions, lost: () => void): FuseBinding {
  let fuse: any
  let watch: NodeJS.Timeout | undefined
  let looking = false
  /** Aborted, the mount answers ENOTCONN; unmounted from outside, the directory under it answers. */
  const look = (f: typeof fuse) => {
    if (looking) return
    looking = true
    fsp.statfs(mountpoint).then((st) => st.type !== FUSE_SUPER_MAGIC, (e: NodeJS.ErrnoException) => e.code === 'ENOTCONN').then((gone) => {
      looking = false
      if (!gone || fuse !== f) return
      clearInterval(watch)
      fuse = undefined
      // fuse-native's close: fusermount -uz (detaches a dead mount) and lets its handle go
      f.unmount((err: Error | null) => {
        if (err) log.error({ err, mountpoint }, 'detaching the dead mount of a lost FUSE connection')
        lost()
      })
    })
  }
  return {
    name: 'fuse-native',
    async mount() {
      fuse = new Fuse(mountpoint, adapt(ops, log), {
        force: true, mkdir: true, timeout: false,
        allowOther: opts.allowOther, defaultPermissions: opts.allowOther,
        // fuse-native passes only a fixed option list; fsname carries big_writes through
        // (without it the kernel splits writes into 4 KiB requests), and use_ino (without
        // it libfuse numbers paths, so two hard links of one file show two inodes).
        fsname: 'vsm,big_writes,max_write=1048576,use_ino', subtype: 'vsm',
      })
      await new Promise<void>((res, rej) => fuse.mount((err: Error | null) => (err ? rej(err) : res())))
      const f = fuse
      watch = setInterval(() => look(f), WATCH_MS).unref()
    },
    async unmount() {
      clearInterval(watch)
      if (!fuse) return
      const f = fuse
      fuse = undefined
      await new Promise<void>((res) => f.unmount(() => res()))
    },
  }
}
