// The FUSE view's operations as ONE binding-neutral table: plain handlers that take
// paths (namespace) or open-file handles (data), buffers and offsets, and return a
// value or throw a VsmError whose code names the errno. Every binding (fuse-native,
// our libfuse3 low-level addon) is a thin adapter over this table, so both serve the
// same semantics. Also owns the open handles (which disks are open, for writing) and
// the read-only snapshot view <mount>/.snapshots/<DISK>/<NAME>.
import { constants as fsConstants } from 'fs'
import { constants } from 'os'
import type { Logger } from 'pino'
import { VsmError, type WriteAck } from '../block/blockdev'
import { RENAME_EXCHANGE, S_IFDIR, S_IFMT, S_IFREG, type FileSystem, type TimeSpec } from '../fs'
import type { WriteGate } from './gate'
import { SNAPDIR } from './paths'
import { SECTOR } from './disks'
import { fileCommand } from './fuse-ioctl'
import { FLUSH, IoMeters, IoStats, READ, WRITE, counted, now } from '../metrics/io'

/** Routes an in-band command the way the control socket would (ControlServer.invoke). */
export type Invoke = (name: string, args: Record<string, unknown>) => Promise<unknown>

/** Who sent a request (the kernel's fuse_ctx); a binding that cannot tell passes ROOT_CALLER. */
export interface Caller { uid: number; gid: number; pid: number }
export const ROOT_CALLER: Caller = { uid: 0, gid: 0, pid: 0 }

/** Times in epoch milliseconds. */
export interface Attr {
  ino: number; mode: number; uid: number; gid: number; size: number; blocks: number; nlink: number
  atime: number; mtime: number; ctime: number; blksize: number
  /** The nanoseconds within atime's and mtime's ms (a binding that cannot carry them shows whole ms). */
  atimeNs?: number; mtimeNs?: number
  /** A device node's number. */
  rdev?: number
}
export interface StatFsOut {
  bsize: number; frsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; favail: number; namemax: number
}

type Awaitable<T> = T | Promise<T>

/**
 * The operation table. Namespace operations take absolute paths inside the mount;
 * data operations take the handle `open`/`create` returned. A handler reports
 * failure by throwing an Error whose `code` is an errno name (VsmError).
 */
export interface FuseOps {
  statfs(path: string): Awaitable<StatFsOut>
  // The attribute operations also take the inode number when the binding knows it (the
  // low-level binding's node ids are inodes): it wins over the path, since a file
  // unlinked while open has no path and the path may name another file by then.
  getattr(path: string, ino?: number): Awaitable<Attr>
  readdir(path: string): Awaitable<string[]>
  open(path: string, flags: number): Awaitable<number>
  create(path: string, mode: number, caller: Caller): Awaitable<number>
  release(fh: number): Awaitable<void>
  /** Fills buf from offset; returns the bytes read (short at end of file). */
  read(fh: number, buf: Buffer, offset: number): Awaitable<number>
  /** Returns the bytes written (all of buf). `ack`: a binding's early answer (WriteAck), for the layers below to use where they may. */
  write(fh: number, buf: Buffer, offset: number, ack?: WriteAck): Awaitable<number>
  /** close(2) of one descriptor of the handle: what it wrote is made durable. */
  flush(fh: number): Awaitable<void>
  fsync(fh: number, datasync: boolean): Awaitable<void>
  truncate(path: string, size: number, ino?: number): Awaitable<void>
  unlink(path: string): Awaitable<void>
  /** flags: renameat2's RENAME_NOREPLACE, RENAME_EXCHANGE. */
  rename(from: string, to: string, flags?: number): Awaitable<void>
  mkdir(path: string, mode: number, caller: Caller): Awaitable<void>
  rmdir(path: string): Awaitable<void>
  chmod(path: string, mode: number, ino?: number): Awaitable<void>
  chown(path: string, uid: number, gid: number, ino?: number): Awaitable<void>
  /** Epoch ms or a Timespec, or 'now' / 'omit' for utimensat's UTIME_NOW / UTIME_OMIT. */
  utimens(path: string, atime: TimeSpec, mtime: TimeSpec, ino?: number): Awaitable<void>
  /** Throws ENODATA when the file has no such attribute. */
  getxattr(path: string, name: string): Awaitable<Buffer>
  setxattr(path: string, name: string, value: Buffer, flags: number): Awaitable<void>
  listxattr(path: string): Awaitable<string[]>
  removexattr(path: string, name: string): Awaitable<void>
  link(from: string, to: string): Awaitable<void>
  symlink(target: string, path: string, caller: Caller): Awaitable<void>
  readlink(path: string): Awaitable<string>
  /** mode carries the file type (fifo, socket, device, regular); rdev a device's number. */
  mknod(path: string, mode: number, rdev: number, caller: Caller): Awaitable<void>
  // Operations only some bindings can carry (fuse-native has none of these): a binding
  // answers ENOSYS (ENOTTY for ioctl) for one the table leaves out.
  /** fallocate(2) modes: 0 (allocate), FALLOC_FL_KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE. */
  fallocate?(fh: number, mode: number, offset: number, length: number): Awaitable<void>
  /** SEEK_DATA / SEEK_HOLE (the kernel answers the other whences itself). */
  lseek?(fh: number, offset: number, whence: number): Awaitable<number>
  /** Returns the bytes copied (short at the end of the input file). */
  copyFileRange?(fhIn: number, offIn: number, fhOut: number, offOut: number, length: number, flags: number): Awaitable<number>
  /** A restricted ioctl: input holds _IOC_SIZE(cmd) bytes for a write-direction code; out (at most outSize bytes) goes back for a read-direction one. */
  ioctl?(fh: number, cmd: number, input: Buffer, outSize: number): Awaitable<{ result: number; out?: Buffer }>
}

/** Negative errno for an error thrown by a handler (EIO when it names none). */
export function errnoOf(err: unknown): number {
  const code = (err as { code?: unknown })?.code
  const n = typeof code === 'string' ? (constants.errno as Record<string, number>)[code] : undefined
  return -(n ?? constants.errno.EIO)
}

/**
 * Runs one handler for a binding and answers exactly once: reply(value) on success,
 * fail(-errno) on failure. An EIO is logged: it is the error nobody expected.
 */
export function callOp<T>(log: Logger, name: string, fn: () => Awaitable<T>, reply: (v: T) => void, fail: (errno: number) => void): void {
  let p: Promise<T>
  try { p = Promise.resolve(fn()) } catch (err) { p = Promise.reject(err) }
  p.then(reply, (err) => {
    const code = errnoOf(err)
    if (code === -constants.errno.EIO) log.error({ op: name, err }, 'fuse op failed')
    fail(code)
  })
}

interface Handle {
  ino: number
  path: string
  dirty: boolean
  writable: boolean
  /** The disk's I/O counters, looked up at open; null when metrics are off (and for snapshot views). */
  io: IoStats | null
  /** Opened with O_DIRECT: its reads and writes must be whole sectors, as on a disk. */
  direct: boolean
}

/**
 * O_DIRECT I/O that is not whole sectors gets EINVAL, as from a disk or a local file
 * system. QEMU probes this to choose its request alignment: where a 1-byte O_DIRECT read
 * works it aligns every request to 4 KiB instead of 512, padding each unaligned guest
 * write into a read-modify-write, and QEMU 7.2 fails a padded request whose vector passes
 * IOV_MAX with EIO to the guest (ext4 with 1 KiB blocks lost file data that way).
 */
function sectorAligned(h: Handle, pos: number, len: number): void {
  if (h.direct && (pos % SECTOR || len % SECTOR)) throw new VsmError('EINVAL', `O_DIRECT I/O at ${pos}+${len} is not whole ${SECTOR}-byte sectors`)
}

/** The view's open handles: what the disk commands ask about (open, open for writing). */
export class Handles {
  private map = new Map<number, Handle>()
  private next = 1

  add(h: Handle): number {
    const fh = this.next++
    this.map.set(fh, h)
    return fh
  }

  get(fh: number): Handle {
    const h = this.map.get(fh)
    if (!h) throw new VsmError('EBADF', 'bad file handle')
    return h
  }

  delete(fh: number): void { this.map.delete(fh) }

  /** Every open handle. */
  all(): number[] { return [...this.map.keys()] }

  renamed(from: string, to: string, exchanged = false): void {
    for (const h of this.map.values()) {
      if (h.path === from) h.path = to
      else if (exchanged && h.path === to) h.path = from
    }
  }

  openCount(path: string): number {
    let n = 0
    for (const h of this.map.values()) if (h.path === path) n++
    return n
  }

  writerCount(path: string): number {
    let n = 0
    for (const h of this.map.values()) if (h.path === path && h.writable) n++
    return n
  }
}

export interface ViewEnv { fs: FileSystem; gate: WriteGate; invoke: Invoke; handles: Handles; meters: IoMeters | null }

const INTERNAL_XATTR = /^vsm\./
/** user.vsm.info (get) and user.vsm.snapshot (set) are commands, not stored attributes. */
const COMMAND_XATTR = /^user\.vsm\./
const SNAPROOT = '/' + SNAPDIR
const O_ACCMODE = 3
const BLKSIZE = 4096
export const FALLOC_FL_KEEP_SIZE = 0x01
export const FALLOC_FL_PUNCH_HOLE = 0x02
export const FALLOC_FL_ZERO_RANGE = 0x10
export const SEEK_DATA = 3
export const SEEK_HOLE = 4
/** Allocation and copies go through the write path this many bytes at a time, so guest I/O waits at most one step. */
const STEP = 1 << 20

/** What a path under /.snapshots names: a directory (of disks or of one disk's snapshots) or a snapshot. */
type SnapNode = { dir: true; entries: () => string[]; mtime: number } | { dir: false; ino: number }

const erofs = () => new VsmError('EROFS', 'the snapshot view is read-only')
const inSnapView = (p: string) => p === SNAPROOT || p.startsWith(SNAPROOT + '/')
/** Refuses a change anywhere under /.snapshots (the root's own name included). */
const rw = (...paths: string[]) => { if (paths.some(inSnapView)) throw erofs() }
const reserved = (name: string) => INTERNAL_XATTR.test(name) || COMMAND_XATTR.test(name)
/**
 * A getxattr's ENODATA, one instance: the kernel asks for security.capability before
 * every write (file_remove_privs), and an Error built for each (its stack trace) was 3%
 * of the daemon's CPU under 4 KiB random writes.
 */
const NO_XATTR = new VsmError('ENODATA', 'no such extended attribute')

/** The view's operations over the fs: the one table every binding serves. */
export function viewOps({ fs, gate, invoke, handles, meters }: ViewEnv): FuseOps {
  /** Resolves a path under /.snapshots; ENOENT when it names nothing. */
  const snapNode = (p: string): SnapNode => {
    const rest = p.slice(SNAPROOT.length) || '/'
    let st: ReturnType<FileSystem['getattr']> | null = null
    try { st = fs.getattr(rest) } catch (e) { if ((e as { code?: string }).code !== 'ENOENT' && (e as { code?: string }).code !== 'ENOTDIR') throw e }
    if (st && (st.mode & S_IFMT) === S_IFDIR) return { dir: true, entries: () => fs.readdir(rest), mtime: st.mtime }
    if (st) return { dir: true, entries: () => fs.snapshots(rest).map((x) => x.name), mtime: st.mtime }
    const i = rest.lastIndexOf('/')
    const disk = rest.slice(0, i)
    if (!disk) throw new VsmError('ENOENT', `no such snapshot view ${p}`)
    return { dir: false, ino: fs.snapshotIno(disk, rest.slice(i + 1)) }
  }
  const snapStat = (p: string): Attr => {
    const n = snapNode(p)
    // a snapshot's inode has no name (nlink 0), which would read as deleted
    if (!n.dir) return { ...fs.statIno(n.ino), mode: S_IFREG | 0o444, nlink: 1, blksize: BLKSIZE }
    const t = n.mtime
    return { ino: 0, mode: S_IFDIR | 0o555, uid: 0, gid: 0, size: 0, blocks: 0, nlink: 2, atime: t, mtime: t, ctime: t, blksize: BLKSIZE }
  }
  const open = async (path: string, flags: number): Promise<number> => {
    const writable = (flags & O_ACCMODE) !== fsConstants.O_RDONLY
    let ino: number
    if (inSnapView(path)) {
      if (writable) throw erofs()
      const n = snapNode(path)
      if (n.dir) throw new VsmError('EISDIR', 'is a directory')
      ino = n.ino
    } else ino = fs.lookup(path)
    // libfuse3 asks the kernel for atomic O_TRUNC: the truncation is the open's to do
    if (writable && flags & fsConstants.O_TRUNC) await fs.truncate(ino, 0)
    const io = meters && !inSnapView(path) ? meters.disk(path.slice(1)) : null
    const fh = handles.add({ ino, path, dirty: false, writable, io, direct: (flags & fsConstants.O_DIRECT) !== 0 })
    // an open file unlinked meanwhile stays readable until its release (an orphan)
    fs.hold(ino)
    return fh
  }

  /** A handle open for writing, or EBADF (EROFS in the snapshot view). */
  const writer = (fh: number) => {
    const h = handles.get(fh)
    if (!h.writable) throw new VsmError(inSnapView(h.path) ? 'EROFS' : 'EBADF', 'handle not open for writing')
    return h
  }
  /** Runs a change to a disk's data inside the write gate (held while the disk is frozen). */
  const gated = async <T>(h: Handle, fn: () => Promise<T>): Promise<T> => {
    h.dirty = true
    const held = gate.enter(h.ino)
    if (held) await held
    try { return await fn() } finally { gate.leave(h.ino) }
  }
  const write = async (h: Handle, buf: Buffer, pos: number, ack?: WriteAck): Promise<number> => {
    await gated(h, () => fs.write(h.ino, buf, pos, ack))
    return buf.length
  }
  /** Writes zeros over the holes of [start, end): the blocks are then the file's own. */
  const fillHoles = async (h: Handle, start: number, end: number) => {
    const zero = (a: number, b: number) => (async () => {
      for (let o = a; o < b; o += STEP) await fs.write(h.ino, Buffer.alloc(Math.min(STEP, b - o)), o)
    })()
    for (let pos = start; pos < end;) {
      const r = fs.dataRun(h.ino, pos)
      const a = r ? Math.min(r[0], end) : end
      if (a > pos) await zero(pos, a)
      pos = r ? Math.max(a, r[1]) : end
    }
  }
  const sync = (h: Handle): Promise<void> => (h.io ? counted(h.io, FLUSH, now(), fs.fsync(h.ino)) : fs.fsync(h.ino))

  return {
    statfs: () => {
      const s = fs.statfs()
      return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: s.namemax }
    },
    getattr: (p, i) => {
      if (inSnapView(p)) return snapStat(p)
      const { ino, mode, uid, gid, size, blocks, nlink, atime, mtime, ctime, atimeNs, mtimeNs, rdev } = i ? fs.statIno(i) : fs.getattr(p)
      return { ino, mode, uid, gid, size, blocks, nlink, atime, mtime, ctime, atimeNs, mtimeNs, rdev, blksize: BLKSIZE }
    },
    readdir: (p) => {
      if (!inSnapView(p)) return fs.readdir(p)
      const n = snapNode(p)
      if (!n.dir) throw new VsmError('ENOTDIR', 'not a directory')
      return n.entries()
    },
    open,
    create: async (p, mode, caller) => { rw(p); await fs.create(p, mode, caller.uid, caller.gid); return open(p, fsConstants.O_RDWR) },
    release: async (fh) => {
      const { ino } = handles.get(fh)
      handles.delete(fh)
      await fs.release(ino)
    },
    read: (fh, buf, pos) => {
      const h = handles.get(fh)
      sectorAligned(h, pos, buf.length)
      return h.io ? counted(h.io, READ, now(), fs.read(h.ino, buf, pos)) : fs.read(h.ino, buf, pos)
    },
    write: (fh, buf, pos, ack) => {
      const h = writer(fh)
      sectorAligned(h, pos, buf.length)
      // the latency counted is the writer's: a wait on a frozen disk included
      return h.io ? counted(h.io, WRITE, now(), write(h, buf, pos, ack)) : write(h, buf, pos, ack)
    },
    flush: async (fh) => {
      const h = handles.get(fh)
      if (h.dirty) { h.dirty = false; await sync(h) }
    },
    fsync: async (fh) => {
      const h = handles.get(fh)
      h.dirty = false
      await sync(h)
    },
    truncate: async (p, size, i) => { rw(p); await fs.truncate(i ?? p, size) },
    unlink: async (p) => { rw(p); await fs.unlink(p) },
    rename: async (a, b, flags = 0) => {
      rw(a, b)
      await fs.rename(a, b, flags)
      handles.renamed(a, b, !!(flags & RENAME_EXCHANGE))
    },
    mkdir: async (p, mode, caller) => { rw(p); await fs.mkdir(p, mode, caller.uid, caller.gid) },
    rmdir: async (p) => { rw(p); await fs.rmdir(p) },
    chmod: async (p, mode, i) => { rw(p); await fs.chmod(i ?? p, mode) },
    chown: async (p, uid, gid, i) => { rw(p); await fs.chown(i ?? p, uid, gid) },
    utimens: async (p, atime, mtime, i) => { rw(p); await fs.utimens(i ?? p, atime, mtime) },
    getxattr: async (p, name) => {
      if (inSnapView(p)) { snapNode(p); throw NO_XATTR }
      if (name === 'user.vsm.info') return Buffer.from(JSON.stringify(await invoke('disk.show', { path: p.slice(1) })) + '\n')
      if (reserved(name)) throw NO_XATTR
      const v = fs.getxattr(p, name)
      if (!v) throw NO_XATTR
      return v
    },
    setxattr: async (p, name, value) => {
      rw(p)
      if (name === 'user.vsm.snapshot') { await invoke('snapshot.create', { path: p.slice(1), name: value.toString().trim() }); return }
      if (reserved(name)) throw new VsmError('EPERM', 'reserved xattr')
      await fs.setxattr(p, name, Buffer.from(value))
    },
    listxattr: (p) => (inSnapView(p) ? [] : fs.listxattr(p).filter((n) => !INTERNAL_XATTR.test(n))),
    removexattr: async (p, name) => {
      rw(p)
      if (reserved(name)) throw new VsmError('EPERM', 'reserved xattr')
      await fs.removexattr(p, name)
    },
    link: async (a, b) => { rw(a, b); await fs.link(a, b) },
    symlink: async (target, p, caller) => { rw(p); await fs.symlink(target, p, caller.uid, caller.gid) },
    readlink: (p) => {
      if (inSnapView(p)) { snapNode(p); throw new VsmError('EINVAL', 'not a symbolic link') }
      return fs.readlink(p)
    },
    mknod: async (p, mode, rdev, caller) => { rw(p); await fs.mknod(p, mode, rdev, caller.uid, caller.gid) },
    fallocate: async (fh, mode, offset, length) => {
      const h = writer(fh)
      if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) throw new VsmError('EOPNOTSUPP', `fallocate mode ${mode} is not supported`)
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0) throw new VsmError('EINVAL', `bad range ${offset}+${length}`)
      const end = offset + length
      const grow = !(mode & FALLOC_FL_KEEP_SIZE) && end > fs.sizeOf(h.ino)
      await gated(h, async () => {
        if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
          // a hole reads as zeros: zero range frees the blocks as punch does
          if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) throw new VsmError('EINVAL', 'punch hole needs keep size')
          await fs.punchHole(h.ino, offset, length)
          if (grow) await fs.truncate(h.path, end)
          return
        }
        if (grow) await fs.truncate(h.path, end)
        await fillHoles(h, offset, Math.min(end, fs.sizeOf(h.ino)))
      })
    },
    lseek: (fh, offset, whence) => {
      const h = handles.get(fh)
      const size = fs.sizeOf(h.ino)
      if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new VsmError('EINVAL', `lseek whence ${whence}`)
      if (offset < 0 || offset >= size) throw new VsmError('ENXIO', `offset ${offset} is past the end of the file`)
      const r = fs.dataRun(h.ino, offset)
      if (whence === SEEK_DATA) {
        if (!r || r[0] >= size) throw new VsmError('ENXIO', `no data after ${offset}`)
        return Math.max(offset, r[0])
      }
      return Math.min(r && r[0] <= offset ? r[1] : offset, size)
    },
    ioctl: (fh, cmd, input) => fileCommand(invoke, handles.get(fh), cmd, input),
    copyFileRange: async (fhIn, offIn, fhOut, offOut, length, flags) => {
      if (flags) throw new VsmError('EINVAL', 'copy_file_range flags must be 0')
      const src = handles.get(fhIn)
      const dst = writer(fhOut)
      const end = Math.min(offIn + length, fs.sizeOf(src.ino))
      if (end <= offIn) return 0
      const buf = Buffer.allocUnsafe(Math.min(STEP, end - offIn))
      const copy = async (from: number, to: number) => {
        for (let pos = from; pos < to;) {
          const n = await fs.read(src.ino, buf.subarray(0, Math.min(STEP, to - pos)), pos)
          if (n <= 0) break
          await fs.write(dst.ino, buf.subarray(0, n), offOut + pos - offIn)
          pos += n
        }
      }
      // whole blocks at the same alignment on both sides are shared, not copied (an
      // instant copy, as a reflink); the partial blocks at the edges are copied
      const a = Math.ceil(offIn / BLKSIZE) * BLKSIZE, b = Math.floor(end / BLKSIZE) * BLKSIZE
      const overlap = src.ino === dst.ino && offIn < offOut + (end - offIn) && offOut < end
      await gated(dst, async () => {
        if (offIn % BLKSIZE !== offOut % BLKSIZE || b <= a || overlap) return copy(offIn, end)
        await copy(offIn, a)
        if (!(await fs.shareRange(src.ino, a, dst.ino, offOut + a - offIn, b - a))) await copy(a, b)
        await copy(b, end)
      })
      return end - offIn
    },
  }
}
