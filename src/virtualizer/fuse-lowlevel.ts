// The default FUSE binding: our addon native/vsm_fuse on libfuse3's low-level API
// (1 MiB requests, many in flight, fallocate, lseek, copy_file_range, ioctl). The
// kernel speaks in node ids; this adapter maps them to paths for the operation table
// (node id = the fs's inode number; directories of the snapshot view, which have no
// inode, get ids of their own) and packs the answers the addon passes to the kernel.
import { join } from 'path'
import type { Logger } from 'pino'
import { VsmError, strandedCalls, type WriteAck } from '../block/blockdev'
import { BufferPool } from '../block/buffers'
import { RENAME_EXCHANGE } from '../fs'
import { callOp, type Attr, type Caller, type FuseOps } from './fuse-ops'
import type { FuseBinding } from './fuse-view'

/** The addon's exports (native/fuse/replies.cc). A req is the request's handle, answered exactly once. */
interface Addon {
  mount(mountpoint: string, options: string, dispatch: Dispatch): unknown
  unmount(session: unknown): void
  invalAttr(session: unknown, ino: number): void
  /** Drops ino's cached attributes and, with data, its cached pages (on a pool thread: see session.cc). */
  invalInode(session: unknown, ino: number, data: boolean): Promise<void>
  /** Drops the cached entry of name in directory node parent. */
  invalEntry(session: unknown, parent: number, name: string): Promise<void>
  destroy(session: unknown): void
  replyErr(req: number, errno: number): void
  replyEntry(req: number, attr: number[], timeout: number): void
  replyCreate(req: number, attr: number[], timeout: number, fh: number, openFlags: number): void
  replyAttr(req: number, attr: number[], timeout: number): void
  replyOpen(req: number, fh: number, openFlags: number): void
  replyBuf(req: number, buf: Buffer, length: number): void
  replyWrite(req: number, count: number): void
  /** replyWrite, sent by the session's replier thread: for when other requests wait on this one. */
  replyWriteLater(req: number, count: number): void
  /** Frees a WRITE's data now; any view of it reads as empty from then on. */
  releaseData(data: Buffer): void
  /** A WRITE's early answer (native/ack.h): handed down with the write, sent by the write thread (native/sys.cc) that writes its last piece. */
  writeAck(req: number): unknown
  ackSplit(ack: unknown, pieces: number): void
  earlyAnswers(): number
  replyStatfs(req: number, v: number[]): void
  replyXattr(req: number, size: number): void
  replyLseek(req: number, offset: number): void
  replyIoctl(req: number, result: number, out?: Buffer): void
  replyReadlink(req: number, target: string): void
}

type Dispatch = (
  op: number, req: number, ino: number, fh: number, off: number, size: number, flags: number,
  name: string | undefined, name2: string | undefined, data: Buffer | undefined,
  ino2: number, fh2: number, off2: number, mode: number, uid: number, gid: number, pid: number,
  nsec: number, nsec2: number,
) => void

// Keep in step with enum Op in native/fuse/session.h.
const OP = {
  CLOSED: 0, LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, MKNOD: 6, MKDIR: 7,
  UNLINK: 8, RMDIR: 9, SYMLINK: 10, RENAME: 11, LINK: 12, OPEN: 13, READ: 14, WRITE: 15, FLUSH: 16,
  RELEASE: 17, FSYNC: 18, OPENDIR: 19, READDIR: 20, RELEASEDIR: 21, STATFS: 22, SETXATTR: 23,
  GETXATTR: 24, LISTXATTR: 25, REMOVEXATTR: 26, CREATE: 27, FALLOCATE: 28, LSEEK: 29,
  COPY_FILE_RANGE: 30, IOCTL: 31,
} as const
const OP_NAME = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]))

const ROOT_ID = 1
/** Ids for nodes without an inode (the snapshot view's directories): far above any inode number. */
const SYNTHETIC_BASE = 2 ** 52
/** The fs inode a node id is (ids below SYNTHETIC_BASE are inode numbers), or undefined. */
const inodeOf = (id: number) => (id < SYNTHETIC_BASE ? id : undefined)
/** Seconds the kernel may cache an entry or attributes (libfuse2's default, as fuse-native used). */
const TIMEOUT = 1
const ERANGE = 34, ENOSYS = 38, ENOTTY = 25
// FUSE_SET_ATTR_* bits of setattr's to_set
const SET_MODE = 1 << 0, SET_UID = 1 << 1, SET_GID = 1 << 2, SET_SIZE = 1 << 3, SET_ATIME = 1 << 4, SET_MTIME = 1 << 5
const SET_ATIME_NOW = 1 << 7, SET_MTIME_NOW = 1 << 8
/** FATTR_KILL_SUIDGID: the caller of this chown or truncate may not keep set-user/group-ID. */
const SET_KILL_SUIDGID = 1 << 11
const S_IFMT = 0o170000, S_ISUID = 0o4000, S_ISGID = 0o2000, S_IXGRP = 0o010

let addon: Addon | undefined
/** Loads the addon; throws when it is not built or libfuse3 is missing (the view then falls back to fuse-native). */
export function loadAddon(): Addon {
  // dist/src/virtualizer/ is three levels below the repo root, where native/build is;
  // VSM_FUSE_ADDON names another build of it.
  addon ??= require(process.env.VSM_FUSE_ADDON || join(__dirname, '..', '..', '..', 'native', 'build', 'Release', 'vsm_fuse.node')) as Addon
  return addon
}

/** A node the kernel holds: the names it was looked up by (hard links give one inode several). */
interface Node { paths: string[]; lookups: number }

/**
 * Node ids the kernel holds (counted by lookups, dropped by forget) and the paths each
 * stands for, indexed by path: an unlink or a rename among 100k held names must not
 * visit every node (it did, and 100k unlinks in one directory ran at 728/s).
 */
class Nodes {
  private byId = new Map<number, Node>([[ROOT_ID, { paths: ['/'], lookups: 1 }]])
  /** The nodes holding each path (a name unlinked while held, then made anew, has two). */
  private byPath = new Map<string, Set<number>>([['/', new Set([ROOT_ID])]])
  /** How many held paths lie below each directory path: a rename looks further only when some do. */
  private below = new Map<string, number>()
  private synthetic = new Map<string, number>()
  private next = SYNTHETIC_BASE

  path(id: number): string {
    const n = this.byId.get(id)
    if (!n || !n.paths.length) throw new VsmError('ESTALE', `unknown node ${id}`)
    return n.paths[n.paths.length - 1]
  }

  child(id: number, name: string): string {
    const p = this.path(id)
    return p === '/' ? `/${name}` : `${p}/${name}`
  }

  /** The id for what path names (its inode, or a synthetic id), counted as one more kernel reference. */
  remember(path: string, attr: Attr): number {
    let id = attr.ino
    if (!id) {
      id = this.synthetic.get(path) ?? this.next++
      this.synthetic.set(path, id)
    }
    const n = this.byId.get(id)
    if (!n) {
      this.byId.set(id, { paths: [], lookups: 1 })
      this.setPaths(id, [path])
    } else {
      n.lookups++
      this.setPaths(id, [...n.paths.filter((p) => p !== path), path])
    }
    return id
  }

  forget(id: number, count: number): void {
    const n = this.byId.get(id)
    if (!n || id === ROOT_ID) return
    n.lookups -= count
    if (n.lookups > 0) return
    if (id >= SYNTHETIC_BASE) for (const p of n.paths) this.synthetic.delete(p)
    this.setPaths(id, [])
    this.byId.delete(id)
  }

  /** The nodes the kernel holds under path. */
  held(path: string): number[] { return [...this.byPath.get(path) ?? []] }

  /** A name is gone: a hard-linked inode is then reached by its other names. */
  unlinked(path: string): void {
    for (const id of this.held(path)) {
      const n = this.byId.get(id)!
      if (n.paths.length > 1) this.setPaths(id, n.paths.filter((p) => p !== path))
    }
  }

  /** RENAME_EXCHANGE: the two names (and what lies below them) trade places. */
  exchanged(a: string, b: string): void {
    const aside = '\0' // no path of the fs: a NUL is never in a name
    this.renamed(a, aside)
    this.renamed(b, a)
    this.renamed(aside, b)
  }

  renamed(from: string, to: string): void {
    const moved = (p: string) => (p === from ? to : p.startsWith(from + '/') ? to + p.slice(from.length) : null)
    const ids = new Set(this.byPath.get(from))
    if (this.below.get(from)) for (const [id, n] of this.byId) if (n.paths.some((p) => moved(p) !== null)) ids.add(id)
    for (const id of ids) this.setPaths(id, this.byId.get(id)!.paths.map((p) => moved(p) ?? p))
    for (const [p, id] of [...this.synthetic]) {
      const q = moved(p)
      if (q !== null) { this.synthetic.delete(p); this.synthetic.set(q, id) }
    }
  }

  /** Node id's paths become `paths`, the indexes following. */
  private setPaths(id: number, paths: string[]): void {
    const n = this.byId.get(id)!
    for (const p of n.paths) if (!paths.includes(p)) this.index(id, p, -1)
    for (const p of paths) if (!n.paths.includes(p)) this.index(id, p, 1)
    n.paths = paths
  }

  private index(id: number, path: string, d: 1 | -1): void {
    const ids = this.byPath.get(path) ?? new Set<number>()
    if (d > 0) ids.add(id)
    else ids.delete(id)
    if (ids.size) this.byPath.set(path, ids)
    else this.byPath.delete(path)
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) {
      const dir = path.slice(0, i)
      const k = (this.below.get(dir) ?? 0) + d
      if (k) this.below.set(dir, k)
      else this.below.delete(dir)
    }
  }
}

const attrArray = (id: number, a: Attr) => [id, a.mode, a.nlink, a.uid, a.gid, a.rdev ?? 0, a.size, a.blocks, a.blksize, a.atime, a.mtime, a.ctime, a.atimeNs ?? 0, a.mtimeNs ?? 0]

/** struct fuse_dirent entries from index `from` on, as many as fit in `size` bytes; each one's off is its index + 1. */
function packDirents(entries: { name: string; id: number; mode: number }[], from: number, size: number): Buffer {
  const parts: Buffer[] = []
  let used = 0
  for (let i = from; i < entries.length; i++) {
    const name = Buffer.from(entries[i].name)
    const len = (24 + name.length + 7) & ~7
    if (used + len > size) break
    const d = Buffer.alloc(len)
    d.writeBigUInt64LE(BigInt(entries[i].id), 0)
    d.writeBigUInt64LE(BigInt(i + 1), 8)
    d.writeUInt32LE(name.length, 16)
    d.writeUInt32LE((entries[i].mode & S_IFMT) >> 12, 20)
    name.copy(d, 24)
    parts.push(d)
    used += len
  }
  return Buffer.concat(parts)
}

/** Packs a list of xattr names as listxattr(2) returns them (each NUL-terminated). */
const packNames = (names: string[]) => Buffer.concat(names.map((n) => Buffer.from(n + '\0')))

/**
 * lost: the kernel ended the connection without an unmount of ours (an abort through
 * /sys/fs/fuse/connections); called once its requests have all been answered and the
 * session is gone (its dead mount detached): nothing will release the files it had open.
 */
export function lowLevelBinding(mountpoint: string, ops: FuseOps, log: Logger, opts: { allowOther: boolean }, lost?: () => void): FuseBinding {
  const a = loadAddon()
  const nodes = new Nodes()
  const readBuffers = new BufferPool()
  const dirs = new Map<number, { name: string; id: number; mode: number }[]>()
  let nextDir = 1
  let session: unknown
  let inflight = 0
  let closed: (() => void) | null = null
  let closedSeen = false

  const fail = (req: number) => (errno: number) => { inflight--; a.replyErr(req, -errno); settle() }
  const settle = () => {
    if (!closedSeen || inflight > 0) return
    if (closed) closed()
    else if (session) {
      a.destroy(session)
      session = undefined
      lost?.()
    }
  }
  /** Runs a handler and answers the request with reply(value). */
  const serve = <T>(op: number, req: number, fn: () => T | Promise<T>, reply: (v: T) => void) => {
    inflight++
    callOp(log, OP_NAME[op], fn, (v) => { inflight--; reply(v); settle() }, fail(req))
  }
  const entry = async (path: string) => {
    const attr = await ops.getattr(path)
    return { id: nodes.remember(path, attr), attr }
  }
  const statOrNull = async (path: string) => { try { return await ops.getattr(path) } catch { return null } }
  /**
   * The kernel (KILLPRIV_V2, see native/fuse/session.cc) flags a write, truncate, chown or O_TRUNC
   * open whose caller may not keep set-user/group-ID and leaves the clearing to the server.
   * Its own rules: set-user-ID goes; set-group-ID goes when the file is group-executable or
   * the caller is outside its group (the primary group here; root always counts as inside).
   */
  const killSuidgid = async (id: number, caller: Caller) => {
    const p = nodes.path(id), i = inodeOf(id)
    const { mode, gid } = await ops.getattr(p, i)
    let keep = mode & 0o7777 & ~S_ISUID
    if (mode & S_IXGRP || (caller.uid !== 0 && caller.gid !== gid)) keep &= ~S_ISGID
    if (keep === (mode & 0o7777)) return
    await ops.chmod(p, keep, i)
    // a write's or an open's reply carries no attributes: without this, stat shows the old mode for a TIMEOUT
    a.invalAttr(session, id)
  }
  const replyEntry = (req: number) => (e: { id: number; attr: Attr }) => a.replyEntry(req, attrArray(e.id, e.attr), TIMEOUT)
  const needed = <K extends keyof FuseOps>(k: K): NonNullable<FuseOps[K]> => {
    const f = ops[k]
    if (!f) throw new VsmError('ENOSYS', `${k} is not supported`)
    return f as NonNullable<FuseOps[K]>
  }

  const dispatch: Dispatch = (op, req, ino, fh, off, size, flags, name, name2, data, ino2, fh2, off2, mode, uid, gid, pid, nsec, nsec2) => {
    const caller: Caller = { uid, gid, pid }
    switch (op) {
      case OP.CLOSED: closedSeen = true; return settle()
      case OP.FORGET: return nodes.forget(ino, size)
      case OP.LOOKUP: return serve(op, req, () => entry(nodes.child(ino, name!)), replyEntry(req))
      case OP.GETATTR: return serve(op, req, () => ops.getattr(nodes.path(ino), inodeOf(ino)), (attr) => a.replyAttr(req, attrArray(ino, attr), TIMEOUT))
      case OP.SETATTR: return serve(op, req, async () => {
        const p = nodes.path(ino), i = inodeOf(ino)
        if (flags & SET_KILL_SUIDGID) await killSuidgid(ino, caller)
        if (flags & SET_MODE) await ops.chmod(p, mode & 0o7777, i)
        if (flags & (SET_UID | SET_GID)) {
          const cur = await ops.getattr(p, i)
          await ops.chown(p, flags & SET_UID ? ino2 : cur.uid, flags & SET_GID ? fh2 : cur.gid, i)
        }
        if (flags & SET_SIZE) await ops.truncate(p, size, i)
        if (flags & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) {
          // utimensat's UTIME_NOW and UTIME_OMIT reach the fs as such (the fs stamps ctime once)
          const at = flags & SET_ATIME_NOW ? 'now' : flags & SET_ATIME ? { sec: off, nsec: nsec } : 'omit'
          const mt = flags & SET_MTIME_NOW ? 'now' : flags & SET_MTIME ? { sec: off2, nsec: nsec2 } : 'omit'
          await ops.utimens(p, at, mt, i)
        }
        return ops.getattr(p, i)
      }, (attr) => a.replyAttr(req, attrArray(ino, attr), TIMEOUT))
      case OP.READLINK: return serve(op, req, () => needed('readlink')(nodes.path(ino)), (t) => a.replyReadlink(req, t))
      case OP.MKNOD: return serve(op, req, async () => {
        const p = nodes.child(ino, name!)
        await needed('mknod')(p, mode, size, caller)
        return entry(p)
      }, replyEntry(req))
      case OP.MKDIR: return serve(op, req, async () => {
        const p = nodes.child(ino, name!)
        await ops.mkdir(p, mode & 0o7777, caller)
        return entry(p)
      }, replyEntry(req))
      case OP.SYMLINK: return serve(op, req, async () => {
        const p = nodes.child(ino, name!)
        await needed('symlink')(name2!, p, caller)
        return entry(p)
      }, replyEntry(req))
      case OP.LINK: return serve(op, req, async () => {
        const p = nodes.child(ino2, name!)
        await needed('link')(nodes.path(ino), p)
        return entry(p)
      }, replyEntry(req))
      case OP.UNLINK: return serve(op, req, async () => {
        const p = nodes.child(ino, name!)
        await ops.unlink(p)
        nodes.unlinked(p)
      }, () => a.replyErr(req, 0))
      case OP.RMDIR: return serve(op, req, () => ops.rmdir(nodes.child(ino, name!)), () => a.replyErr(req, 0))
      case OP.RENAME: return serve(op, req, async () => {
        const from = nodes.child(ino, name!), to = nodes.child(ino2, name2!)
        // the fs checks the flags (RENAME_NOREPLACE, RENAME_EXCHANGE) in the same step as the rename
        await ops.rename(from, to, flags)
        if (flags & RENAME_EXCHANGE) nodes.exchanged(from, to)
        else {
          nodes.unlinked(to)
          nodes.renamed(from, to)
        }
      }, () => a.replyErr(req, 0))
      case OP.OPEN: return serve(op, req, async () => {
        const p = nodes.path(ino)
        const h = await ops.open(p, flags)
        try {
          if (mode) await killSuidgid(ino, caller)
        } catch (e) {
          await ops.release(h)
          throw e
        }
        return h
      }, (h) => a.replyOpen(req, h, 0))
      case OP.CREATE: return serve(op, req, async () => {
        const p = nodes.child(ino, name!)
        const h = await ops.create(p, mode & 0o7777, caller)
        return { h, e: await entry(p) }
      }, ({ h, e }) => a.replyCreate(req, attrArray(e.id, e.attr), TIMEOUT, h, 0))
      case OP.READ: {
        const { buf, ticket } = readBuffers.take(size)
        // replyBuf copies the bytes to the kernel: the buffer is free once it returns
        return serve(op, req, () => ops.read(fh, buf, off), (n) => { a.replyBuf(req, buf, n); readBuffers.give(ticket) })
      }
      case OP.WRITE: {
        const stranded = strandedCalls()
        // the guest's write may be answered by the thread that writes its last piece (a reply here then only frees the request)
        const handle = a.writeAck(req)
        const ack: WriteAck = { handle, split: (k) => { if (k > 1) a.ackSplit(handle, k) } }
        return serve(op, req, async () => {
          if (flags) await killSuidgid(ino, caller)
          const n = await ops.write(fh, data!, off, ack)
          // nothing below keeps a written buffer once the write settled, unless a device
          // was abandoned with the kernel still reading it (or the write failed part way)
          if (strandedCalls() === stranded) a.releaseData(data!)
          return n
        // with other requests in hand, the main thread leaves the answer (a writev to /dev/fuse
        // that wakes the writer, ~20 us) to the replier thread; alone, it answers at once
        }, (n) => inflight > 0 ? a.replyWriteLater(req, n) : a.replyWrite(req, n))
      }
      case OP.FLUSH: return serve(op, req, () => ops.flush(fh), () => a.replyErr(req, 0))
      case OP.RELEASE: return serve(op, req, () => ops.release(fh), () => a.replyErr(req, 0))
      case OP.FSYNC: return serve(op, req, () => ops.fsync(fh, !!flags), () => a.replyErr(req, 0))
      case OP.OPENDIR: return serve(op, req, async () => {
        const p = nodes.path(ino)
        const self = await ops.getattr(p)
        const list = [{ name: '.', id: ino, mode: self.mode }, { name: '..', id: ino, mode: self.mode }]
        for (const n of await ops.readdir(p)) {
          const c = p === '/' ? `/${n}` : `${p}/${n}`
          const st = await statOrNull(c)
          if (st) list.push({ name: n, id: st.ino || SYNTHETIC_BASE - 1, mode: st.mode })
        }
        const h = nextDir++
        dirs.set(h, list)
        return h
      }, (h) => a.replyOpen(req, h, 0))
      case OP.READDIR: return serve(op, req, () => packDirents(dirs.get(fh) ?? [], off, size), (b) => a.replyBuf(req, b, b.length))
      case OP.RELEASEDIR: dirs.delete(fh); inflight++; return fail(req)(0)
      case OP.STATFS: return serve(op, req, () => ops.statfs(nodes.path(ino)), (s) =>
        a.replyStatfs(req, [s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.namemax]))
      case OP.SETXATTR: return serve(op, req, () => ops.setxattr(nodes.path(ino), name!, data!, flags), () => a.replyErr(req, 0))
      case OP.GETXATTR: return serve(op, req, () => ops.getxattr(nodes.path(ino), name!), (v) => {
        if (size === 0) a.replyXattr(req, v.length)
        else if (v.length > size) a.replyErr(req, ERANGE)
        else a.replyBuf(req, v, v.length)
      })
      case OP.LISTXATTR: return serve(op, req, async () => packNames(await ops.listxattr(nodes.path(ino))), (v) => {
        if (size === 0) a.replyXattr(req, v.length)
        else if (v.length > size) a.replyErr(req, ERANGE)
        else a.replyBuf(req, v, v.length)
      })
      case OP.REMOVEXATTR: return serve(op, req, () => ops.removexattr(nodes.path(ino), name!), () => a.replyErr(req, 0))
      case OP.FALLOCATE: return serve(op, req, () => needed('fallocate')(fh, flags, off, size), () => a.replyErr(req, 0))
      case OP.LSEEK: return serve(op, req, () => needed('lseek')(fh, off, flags), (o) => a.replyLseek(req, o))
      case OP.COPY_FILE_RANGE: return serve(op, req, () => needed('copyFileRange')(fh, off, fh2, off2, size, flags), (n) => a.replyWrite(req, n))
      case OP.IOCTL: {
        if (!ops.ioctl) { inflight++; return fail(req)(-ENOTTY) }
        return serve(op, req, () => ops.ioctl!(fh, flags >>> 0, data!, size), (r) => (r.result < 0 ? a.replyErr(req, -r.result) : a.replyIoctl(req, r.result, r.out)))
      }
      default: inflight++; return fail(req)(-ENOSYS)
    }
  }

  return {
    name: 'native',
    earlyWrites: () => a.earlyAnswers(),
    async changed(path, how) {
      if (!session) return
      if (how === 'gone') {
        const cut = path.lastIndexOf('/')
        const dir = path.slice(0, cut) || '/', name = path.slice(cut + 1)
        for (const parent of nodes.held(dir)) await a.invalEntry(session, parent, name)
        nodes.unlinked(path)
      }
      for (const id of nodes.held(path)) await a.invalInode(session, id, how === 'data')
    },
    async mount() {
      const o = ['fsname=vsm', 'subtype=vsm', ...(opts.allowOther ? ['allow_other', 'default_permissions'] : [])]
      session = a.mount(mountpoint, o.join(','), dispatch)
    },
    async unmount() {
      if (!session) return
      const s = session
      session = undefined
      const done = new Promise<boolean>((res) => {
        closed = () => res(true)
        setTimeout(() => res(false), 5000).unref()
      })
      a.unmount(s)
      settle()
      // The session serves until the kernel ends the connection: if something still holds
      // a file open on the detached mount, leave it serving (the process is ending).
      if (await done) a.destroy(s)
      else log.warn({ mount: mountpoint, inflight }, 'FUSE connection still open after unmount; not waiting for it')
    },
  }
}
