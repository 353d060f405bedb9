// The namespace: paths, directories, links, special files, attributes and xattrs, and
// open handles (hold/release) that keep an unlinked file as an orphan until its last
// close. Each change is one op through core.exec.
import type { FsCore } from './core'
import {
  FileRef, Inode, LINK_MAX, NODE_TYPES, NO_ID, PATH_MAX, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT, S_IFBLK, S_IFCHR, S_IFDIR,
  S_IFLNK, S_IFMT, S_IFREG, Stat, TimeSpec, XATTR_MAX, checkId, checkMode, checkTime, checkXattrName, err, msAndNs,
} from './inode'
import { ensureMeta } from './journal'
import { placeable, placementFor } from './volumes'

export function getattr(c: FsCore, path: string): Stat {
  c.live()
  return c.stat(c.resolve(path))
}

export function lookup(c: FsCore, path: string): number {
  c.live()
  return c.resolve(path).ino
}

export function readdir(c: FsCore, path: string): string[] {
  c.live()
  const n = c.resolve(path)
  if (!n.entries) throw err('ENOTDIR', `not a directory: ${path}`)
  return [...n.entries.keys()]
}

export async function makeNode(c: FsCore, path: string, mode: number, uid: number, gid: number, type: number, vol: number, extra: { l?: string; r?: number } = {}): Promise<number> {
  c.live()
  checkMode(mode); checkId(uid, 'uid'); checkId(gid, 'gid')
  c.resolveParent(path)
  await ensureMeta(c, 400 + (extra.l?.length ?? 0) * 2)
  c.live()
  const { dir, name } = c.resolveParent(path)
  if (dir.entries!.has(name)) throw err('EEXIST', `already exists: ${path}`)
  const ino = c.nextIno
  c.exec({ o: 'mk', p: dir.ino, n: name, i: ino, m: type | (mode & 0o7777), u: uid, g: gid, t: Date.now(), v: vol, ...extra })
  return ino
}

/** A symbolic link at `path` holding `target` (stored as given; the kernel resolves it). */
export async function symlink(c: FsCore, target: string, path: string, uid: number, gid: number): Promise<number> {
  if (typeof target !== 'string' || target.length === 0 || target.includes('\0')) throw err('EINVAL', 'a symlink target is a non-empty string without NUL')
  if (Buffer.byteLength(target) >= PATH_MAX) throw err('ENAMETOOLONG', `symlink target longer than ${PATH_MAX - 1} bytes`)
  return makeNode(c, path, 0o777, uid, gid, S_IFLNK, 0, { l: target })
}

export function readlink(c: FsCore, path: string): string {
  c.live()
  const n = c.resolve(path)
  if ((n.mode & S_IFMT) !== S_IFLNK) throw err('EINVAL', `not a symbolic link: ${path}`)
  return n.target
}

/** mknod(2): a regular file, fifo, socket or device node (mode carries the type; rdev the device number). */
export async function mknod(c: FsCore, path: string, mode: number, rdev: number, uid: number, gid: number): Promise<number> {
  checkMode(mode)
  const type = (mode & S_IFMT) || S_IFREG
  if (!NODE_TYPES.has(type)) throw err(type === S_IFDIR ? 'EPERM' : 'EINVAL', `mknod cannot make type ${type.toString(8)}`)
  const dev = type === S_IFCHR || type === S_IFBLK
  if (dev && (!Number.isSafeInteger(rdev) || rdev < 0)) throw err('EINVAL', `bad device number ${rdev}`)
  return makeNode(c, path, mode, uid, gid, type, 0, dev ? { r: rdev } : {})
}

/** link(2): a second name for a file (not a directory). */
export async function link(c: FsCore, from: string, to: string): Promise<void> {
  c.live()
  const n = c.resolve(from)
  if (n.isDir) throw err('EPERM', `cannot hard-link a directory: ${from}`)
  c.resolveParent(to)
  await ensureMeta(c, 400)
  c.live()
  const m = c.resolve(from)
  const { dir, name } = c.resolveParent(to)
  if (dir.entries!.has(name)) throw err('EEXIST', `already exists: ${to}`)
  if (m.nlink >= LINK_MAX) throw err('EMLINK', `${from} has ${LINK_MAX} links`)
  c.exec({ o: 'ln', i: m.ino, p: dir.ino, n: name, t: Date.now() })
}

/**
 * An open handle on an inode: while any is held, removing its last name keeps the
 * inode as an orphan (readable and writable through the handle) until release().
 */
export function hold(c: FsCore, ino: number): void {
  c.node(ino)
  c.opened.set(ino, (c.opened.get(ino) ?? 0) + 1)
}

/** The last release of an orphan frees it (a crash before that frees it at the next mount). */
export async function release(c: FsCore, ino: number): Promise<void> {
  const left = (c.opened.get(ino) ?? 0) - 1
  if (left > 0) { c.opened.set(ino, left); return }
  c.opened.delete(ino)
  for (;;) {
    const n = c.inodes.get(ino)
    if (!n?.isOrphan || c.opened.has(ino) || c.broken || c.closed) return
    if (n.busy) { await c.drain(n); continue }
    c.exec({ o: 'or', i: ino })
    return
  }
}

/** Files unlinked while open, not yet released. */
export function orphans(c: FsCore): number[] {
  return [...c.inodes.values()].filter((n) => n.isOrphan).map((n) => n.ino)
}

export async function mkdir(c: FsCore, path: string, mode: number, uid: number, gid: number): Promise<void> {
  await makeNode(c, path, mode, uid, gid, S_IFDIR, 0)
}

export async function create(c: FsCore, path: string, mode: number, uid: number, gid: number, opts: { volume?: number } = {}): Promise<number> {
  const vol = opts.volume ?? placementFor(c, path)
  placeable(c, vol, 'create')
  return makeNode(c, path, mode, uid, gid, S_IFREG, vol)
}

export async function unlink(c: FsCore, path: string): Promise<void> {
  for (;;) {
    c.live()
    const { dir, name } = c.resolveParent(path)
    const i = dir.entries!.get(name)
    if (i === undefined) throw err('ENOENT', `no such file: ${path}`)
    const n = c.inodes.get(i)!
    if (n.isDir) throw err('EISDIR', `is a directory: ${path}`)
    if (n.nlink <= 1 && n.busy && !c.opened.has(i)) { await c.drain(n); continue }
    c.exec({ o: 'rm', p: dir.ino, n: name, t: Date.now(), ...keep(c, i) })
    return
  }
}

export async function rmdir(c: FsCore, path: string): Promise<void> {
  c.live()
  const { dir, name } = c.resolveParent(path)
  const i = dir.entries!.get(name)
  if (i === undefined) throw err('ENOENT', `no such directory: ${path}`)
  const n = c.inodes.get(i)!
  if (!n.isDir) throw err('ENOTDIR', `not a directory: ${path}`)
  if (n.entries!.size) throw err('ENOTEMPTY', `directory not empty: ${path}`)
  c.exec({ o: 'rm', p: dir.ino, n: name, t: Date.now() })
}

/** A directory may not move below itself. */
export function checkNotBelow(c: FsCore, dirIno: number, under: Inode, from: string, to: string) {
  for (let a = under; ; a = c.inodes.get(a.parent)!) {
    if (a.ino === dirIno) throw err('EINVAL', `cannot move ${from} into its own subtree ${to}`)
    if (a.ino === ROOT) break
  }
}

export function keep(c: FsCore, ino: number): { k?: 1 } {
  return c.opened.has(ino) ? { k: 1 } : {}
}

/** rename(2), and renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE flags. */
export async function rename(c: FsCore, from: string, to: string, flags = 0): Promise<void> {
  if (!Number.isInteger(flags) || flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) {
    throw err('EINVAL', `bad rename flags ${flags}`)
  }
  for (;;) {
    c.live()
    const s = c.resolveParent(from)
    const d = c.resolveParent(to)
    const i = s.dir.entries!.get(s.name)
    if (i === undefined) throw err('ENOENT', `no such file or directory: ${from}`)
    const n = c.inodes.get(i)!
    const t = d.dir.entries!.get(d.name)
    if (flags & RENAME_NOREPLACE && t !== undefined) throw err('EEXIST', `already exists: ${to}`)
    if (flags & RENAME_EXCHANGE) {
      if (t === undefined) throw err('ENOENT', `no such file or directory: ${to}`)
      if (t === i) return
      if (n.isDir) checkNotBelow(c, i, d.dir, from, to)
      if (c.inodes.get(t)!.isDir) checkNotBelow(c, t, s.dir, to, from)
      c.exec({ o: 'mv', p: s.dir.ino, n: s.name, q: d.dir.ino, m: d.name, t: Date.now(), x: 1 })
      return
    }
    if (n.isDir) checkNotBelow(c, i, d.dir, from, to)
    if (t === i) return
    if (t !== undefined) {
      const tn = c.inodes.get(t)!
      if (n.isDir && !tn.isDir) throw err('ENOTDIR', `cannot replace non-directory ${to} with a directory`)
      if (!n.isDir && tn.isDir) throw err('EISDIR', `cannot replace directory ${to} with a non-directory`)
      if (tn.isDir && tn.entries!.size) throw err('ENOTEMPTY', `directory not empty: ${to}`)
      if (!tn.isDir && tn.nlink <= 1 && tn.busy && !c.opened.has(t)) { await c.drain(tn); continue }
    }
    c.exec({ o: 'mv', p: s.dir.ino, n: s.name, q: d.dir.ino, m: d.name, t: Date.now(), ...(t === undefined ? {} : keep(c, t)) })
    return
  }
}

export async function chmod(c: FsCore, path: FileRef, mode: number): Promise<void> {
  c.live()
  checkMode(mode)
  const n = c.resolve(path)
  n.mode = (n.mode & S_IFMT) | (mode & 0o7777)
  n.ctime = Date.now()
  c.touchAttrs(n)
}

/** An id of -1 (as uid_t: 0xffffffff) leaves that one unchanged, as chown(2). */
export async function chown(c: FsCore, path: FileRef, uid: number, gid: number): Promise<void> {
  c.live()
  checkId(uid, 'uid'); checkId(gid, 'gid')
  const n = c.resolve(path)
  if (uid !== NO_ID) n.uid = uid
  if (gid !== NO_ID) n.gid = gid
  n.ctime = Date.now()
  c.touchAttrs(n)
}

/** Times in epoch ms or as a Timespec, or utimensat's 'now' (UTIME_NOW) and 'omit' (UTIME_OMIT); ctime moves unless both are omitted. */
export async function utimens(c: FsCore, path: FileRef, atime: TimeSpec, mtime: TimeSpec): Promise<void> {
  c.live()
  if (atime !== 'now' && atime !== 'omit') checkTime(atime, 'atime')
  if (mtime !== 'now' && mtime !== 'omit') checkTime(mtime, 'mtime')
  const n = c.resolve(path)
  if (atime === 'omit' && mtime === 'omit') return
  const now = Date.now()
  if (atime !== 'omit') [n.atime, n.atimeNs] = atime === 'now' ? [now, 0] : msAndNs(atime)
  if (mtime !== 'omit') [n.mtime, n.mtimeNs] = mtime === 'now' ? [now, 0] : msAndNs(mtime)
  n.ctime = now
  c.touchAttrs(n)
}

export function getxattr(c: FsCore, path: string, name: string): Buffer | undefined {
  c.live()
  checkXattrName(name)
  const v = c.resolve(path).xattr.get(name)
  return v ? Buffer.from(v) : undefined
}

export function listxattr(c: FsCore, path: string): string[] {
  c.live()
  return [...c.resolve(path).xattr.keys()]
}

export async function setxattr(c: FsCore, path: string, name: string, value: Buffer): Promise<void> {
  c.live()
  checkXattrName(name)
  if (!Buffer.isBuffer(value)) throw err('EINVAL', 'xattr value must be a Buffer')
  if (value.length > XATTR_MAX) throw err('E2BIG', `xattr value larger than ${XATTR_MAX} bytes`)
  c.resolve(path)
  await ensureMeta(c, value.length * 2 + 400)
  c.live()
  const n = c.resolve(path)
  c.exec({ o: 'xa', i: n.ino, n: name, v: value.toString('base64'), t: Date.now() })
}

export async function removexattr(c: FsCore, path: string, name: string): Promise<void> {
  c.live()
  checkXattrName(name)
  const n = c.resolve(path)
  if (!n.xattr.has(name)) throw err('ENODATA', `no xattr ${name} on ${path}`)
  c.exec({ o: 'xa', i: n.ino, n: name, v: null, t: Date.now() })
}
