// The FUSE view: mounts the fs so every regular file is a raw disk image any
// program can open. Each kernel request becomes a call on the fs; fsync and flush of
// a written handle reach stable storage through every layer before they answer.
// <mount>/.snapshots/<DISK>/<NAME> shows every snapshot as a read-only image (QEMU can
// boot it with readonly=on); anything that would change it gets EROFS.
import { constants as fsConstants } from 'fs'
import { constants } from 'os'
import type { Logger } from 'pino'
import { S_IFDIR, S_IFMT, S_IFREG, type FileSystem } from '../fs'
import type { WriteGate } from './gate'
import { SNAPDIR } from './paths'

/** Routes an in-band command the way the control socket would (ControlServer.invoke). */
export type Invoke = (name: string, args: Record<string, unknown>) => Promise<unknown>

// fuse-native ships no types; this is the part of it we use.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const Fuse = require('fuse-native')
type Cb = (code: number, value?: unknown) => void

const INTERNAL_XATTR = /^vsm\./
/** user.vsm.info (get) and user.vsm.snapshot (set) are commands, not stored attributes. */
const COMMAND_XATTR = /^user\.vsm\./

interface Handle { ino: number; path: string; dirty: boolean; writable: boolean }

const SNAPROOT = '/' + SNAPDIR
const O_ACCMODE = 3

/** What a path under /.snapshots names: a directory (of disks or of one disk's snapshots) or a snapshot. */
type SnapNode = { dir: true; entries: () => string[]; mtime: number } | { dir: false; ino: number }

function erofs(): Error { return Object.assign(new Error('the snapshot view is read-only'), { code: 'EROFS' }) }
const inSnapView = (p: string) => p === SNAPROOT || p.startsWith(SNAPROOT + '/')

export function errnoOf(err: unknown): number {
  const code = (err as { code?: unknown })?.code
  const n = typeof code === 'string' ? (constants.errno as Record<string, number>)[code] : undefined
  return -(n ?? constants.errno.EIO)
}

export class FuseView {
  private fuse: any
  private handles = new Map<number, Handle>()
  private nextFd = 1

  constructor(
    private readonly fs: FileSystem,
    private readonly mountpoint: string,
    private readonly gate: WriteGate,
    private readonly invoke: Invoke,
    private readonly log: Logger,
  ) {}

  openCount(path: string): number {
    let n = 0
    for (const h of this.handles.values()) if (h.path === path) n++
    return n
  }

  writerCount(path: string): number {
    let n = 0
    for (const h of this.handles.values()) if (h.path === path && h.writable) n++
    return n
  }

  /** Resolves a path under /.snapshots; ENOENT when it names nothing. */
  private snapNode(p: string): SnapNode {
    const fs = this.fs
    const rest = p.slice(SNAPROOT.length) || '/'
    let st: ReturnType<FileSystem['getattr']> | null = null
    try { st = fs.getattr(rest) } catch (e) { if ((e as { code?: string }).code !== 'ENOENT' && (e as { code?: string }).code !== 'ENOTDIR') throw e }
    if (st && (st.mode & S_IFMT) === S_IFDIR) return { dir: true, entries: () => fs.readdir(rest), mtime: st.mtime }
    if (st) return { dir: true, entries: () => fs.snapshots(rest).map((x) => x.name), mtime: st.mtime }
    const i = rest.lastIndexOf('/')
    const disk = rest.slice(0, i)
    if (!disk) throw Object.assign(new Error(`no such snapshot view ${p}`), { code: 'ENOENT' })
    return { dir: false, ino: fs.snapshotIno(disk, rest.slice(i + 1)) }
  }

  private snapStat(p: string) {
    const n = this.snapNode(p)
    if (!n.dir) return { ...this.fs.statIno(n.ino), mode: S_IFREG | 0o444, blksize: 4096 }
    const t = n.mtime
    return { ino: 0, mode: S_IFDIR | 0o555, uid: 0, gid: 0, size: 0, blocks: 0, nlink: 2, atime: t, mtime: t, ctime: t, blksize: 4096 }
  }

  async mount(): Promise<void> {
    this.fuse = new Fuse(this.mountpoint, this.ops(), {
      force: true, mkdir: true, timeout: false,
      // fuse-native passes only a fixed option list; fsname carries big_writes through
      // (without it the kernel splits writes into 4 KiB requests).
      fsname: 'vsm,big_writes,max_write=1048576', subtype: 'vsm',
    })
    await new Promise<void>((res, rej) => this.fuse.mount((err: Error | null) => (err ? rej(err) : res())))
  }

  async unmount(): Promise<void> {
    if (!this.fuse) return
    const f = this.fuse
    this.fuse = undefined
    await new Promise<void>((res) => f.unmount(() => res()))
  }

  private ops() {
    const fs = this.fs
    // Every op answers exactly once: a value on success, a negative errno on failure.
    // read and write answer with a byte count in the code position; the rest with (0, value).
    const run = (name: string, cb: Cb, fn: () => unknown, isCount = false) => {
      let p: Promise<unknown>
      try { p = Promise.resolve(fn()) } catch (err) { p = Promise.reject(err) }
      p.then((v) => (isCount ? cb(v as number) : cb(0, v)), (err) => {
        const code = errnoOf(err)
        if (code === -constants.errno.EIO) this.log.error({ op: name, err }, 'fuse op failed')
        cb(code)
      })
    }
    const handle = (fd: number): Handle => {
      const h = this.handles.get(fd)
      if (!h) throw Object.assign(new Error('bad file handle'), { code: 'EBADF' })
      return h
    }
    const open = (path: string, flags: number) => {
      const writable = (flags & O_ACCMODE) !== fsConstants.O_RDONLY
      let ino: number
      if (inSnapView(path)) {
        if (writable) throw erofs()
        const n = this.snapNode(path)
        if (n.dir) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' })
        ino = n.ino
      } else ino = fs.lookup(path)
      const fd = this.nextFd++
      this.handles.set(fd, { ino, path, dirty: false, writable })
      return fd
    }
    const stat = (path: string) => {
      if (inSnapView(path)) return this.snapStat(path)
      const s = fs.getattr(path)
      return { ...s, blksize: 4096 }
    }
    /** Refuses a change anywhere under /.snapshots (the root's own name included). */
    const rw = (...paths: string[]) => { if (paths.some(inSnapView)) throw erofs() }
    return {
      init: (cb: Cb) => cb(0),
      statfs: (_p: string, cb: Cb) => run('statfs', cb, () => {
        const s = fs.statfs()
        return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: s.namemax }
      }),
      getattr: (p: string, cb: Cb) => run('getattr', cb, () => stat(p)),
      fgetattr: (p: string, _fd: number, cb: Cb) => run('getattr', cb, () => stat(p)),
      readdir: (p: string, cb: Cb) => run('readdir', cb, () => {
        if (!inSnapView(p)) return fs.readdir(p)
        const n = this.snapNode(p)
        if (!n.dir) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' })
        return n.entries()
      }),
      open: (p: string, flags: number, cb: Cb) => run('open', cb, () => open(p, flags)),
      create: (p: string, mode: number, cb: Cb) => run('create', cb, async () => { rw(p); await fs.create(p, mode, 0, 0); return open(p, fsConstants.O_RDWR) }),
      release: (_p: string, fd: number, cb: Cb) => run('release', cb, () => { this.handles.delete(fd); return 0 }),
      read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
        run('read', cb, () => fs.read(handle(fd).ino, buf.subarray(0, len), pos), true),
      write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
        run('write', cb, async () => {
          const h = handle(fd)
          if (!h.writable) throw Object.assign(new Error('handle not open for writing'), { code: inSnapView(h.path) ? 'EROFS' : 'EBADF' })
          h.dirty = true
          const held = this.gate.enter(h.ino)
          if (held) await held
          try {
            await fs.write(h.ino, buf.subarray(0, len), pos)
          } finally {
            this.gate.leave(h.ino)
          }
          return len
        }, true),
      flush: (_p: string, fd: number, cb: Cb) => run('flush', cb, async () => {
        const h = handle(fd)
        if (h.dirty) { h.dirty = false; await fs.fsync(h.ino) }
        return 0
      }),
      fsync: (_p: string, _datasync: boolean, fd: number, cb: Cb) => run('fsync', cb, async () => {
        const h = handle(fd)
        h.dirty = false
        await fs.fsync(h.ino)
        return 0
      }),
      truncate: (p: string, size: number, cb: Cb) => run('truncate', cb, async () => { rw(p); await fs.truncate(p, size); return 0 }),
      ftruncate: (p: string, _fd: number, size: number, cb: Cb) => run('truncate', cb, async () => { rw(p); await fs.truncate(p, size); return 0 }),
      unlink: (p: string, cb: Cb) => run('unlink', cb, async () => { rw(p); await fs.unlink(p); return 0 }),
      rename: (a: string, b: string, cb: Cb) => run('rename', cb, async () => {
        rw(a, b)
        await fs.rename(a, b)
        for (const h of this.handles.values()) if (h.path === a) h.path = b
        return 0
      }),
      mkdir: (p: string, mode: number, cb: Cb) => run('mkdir', cb, async () => { rw(p); await fs.mkdir(p, mode, 0, 0); return 0 }),
      rmdir: (p: string, cb: Cb) => run('rmdir', cb, async () => { rw(p); await fs.rmdir(p); return 0 }),
      chmod: (p: string, mode: number, cb: Cb) => run('chmod', cb, async () => { rw(p); await fs.chmod(p, mode); return 0 }),
      chown: (p: string, uid: number, gid: number, cb: Cb) => run('chown', cb, async () => { rw(p); await fs.chown(p, uid, gid); return 0 }),
      utimens: (p: string, atime: number, mtime: number, cb: Cb) => run('utimens', cb, async () => { rw(p); await fs.utimens(p, atime, mtime); return 0 }),
      getxattr: (p: string, name: string, _pos: number, cb: Cb) => run('getxattr', cb, async () => {
        if (inSnapView(p)) { this.snapNode(p); return null }
        if (name === 'user.vsm.info') return Buffer.from(JSON.stringify(await this.invoke('disk.show', { path: p.slice(1) })) + '\n')
        if (INTERNAL_XATTR.test(name) || COMMAND_XATTR.test(name)) return null
        return fs.getxattr(p, name) ?? null
      }),
      setxattr: (p: string, name: string, value: Buffer, _pos: number, _flags: number, cb: Cb) => run('setxattr', cb, async () => {
        rw(p)
        if (name === 'user.vsm.snapshot') { await this.invoke('snapshot.create', { path: p.slice(1), name: value.toString().trim() }); return 0 }
        if (INTERNAL_XATTR.test(name) || COMMAND_XATTR.test(name)) throw Object.assign(new Error('reserved xattr'), { code: 'EPERM' })
        await fs.setxattr(p, name, Buffer.from(value))
        return 0
      }),
      listxattr: (p: string, cb: Cb) => run('listxattr', cb, () => (inSnapView(p) ? [] : fs.listxattr(p).filter((n) => !INTERNAL_XATTR.test(n)))),
      removexattr: (p: string, name: string, cb: Cb) => run('removexattr', cb, async () => {
        rw(p)
        if (INTERNAL_XATTR.test(name) || COMMAND_XATTR.test(name)) throw Object.assign(new Error('reserved xattr'), { code: 'EPERM' })
        await fs.removexattr(p, name)
        return 0
      }),
    }
  }
}
