// The fs's logical operations and their interpreter. Every metadata change is an Op;
// apply() is the one function that changes the in-memory state for an op, used both
// live (core.exec) and by journal replay, so the two cannot diverge.
import type { FsCore } from './core'
import { Dir } from './dir'
import { Extent } from './extents'
import { Inode, S_IFDIR, S_IFMT, S_IFREG, STAMP_GEN, err } from './inode'
import { BS } from './layout'
import { dropped, markDirty, rebase } from './trees'

export type Op =
  /** l: a symlink's target; r: a device's number. */
  | { o: 'mk'; p: number; n: string; i: number; m: number; u: number; g: number; t: number; v: number; l?: string; r?: number }
  /** k: the inode is open, keep it as an orphan when its last name goes. */
  | { o: 'rm'; p: number; n: string; t: number; k?: 1 }
  /** x: exchange the two entries (RENAME_EXCHANGE); k as for rm, for a replaced target. */
  | { o: 'mv'; p: number; n: string; q: number; m: string; t: number; x?: 1; k?: 1 }
  /** Hard link: one more name for inode i. */
  | { o: 'ln'; i: number; p: number; n: string; t: number }
  /** An orphan (unlinked while open) is released: its blocks go. */
  | { o: 'or'; i: number }
  | { o: 'tr'; i: number; s: number; t: number; st: number }
  | { o: 'ph'; i: number; b0: number; b1: number; t: number; st: number }
  | { o: 'at'; i: number; m: number; u: number; g: number; s: number; a: number; mt: number; c: number; st: number; an?: number; mn?: number }
  | { o: 'xa'; i: number; n: string; v: string | null; t: number }
  /** Maps file blocks (replacing what they mapped: copy-on-write moves a block). */
  | { o: 'ex'; i: number; e: number[]; st: number }
  /** Snapshot s of file i, named n: a copy of the extent map (shared, not the data), size z. */
  | { o: 'sn'; i: number; s: number; n: string; z: number; t: number; st: number }
  | { o: 'sd'; s: number; t: number }
  /** File i becomes a copy of its snapshot s. */
  | { o: 'rv'; i: number; s: number; t: number; st: number }
  /** File i's blocks [d, d+b1-b0) become file (or snapshot) s's blocks [b0, b1), shared: a reflink copy; its size grows to z. */
  | { o: 'sr'; s: number; b0: number; b1: number; i: number; d: number; z: number; t: number; st: number }
  /** New file i named n in directory p, sharing every block of snapshot s. */
  | { o: 'cl'; s: number; p: number; n: string; i: number; m: number; u: number; g: number; t: number; v: number; st: number }
  /**
   * Relocate: blocks [p, p+n) of volume v now live at [q, q+n) of volume w, in every
   * map listed in h as (inode, file block where the run starts in it).
   */
  | { o: 'rl'; v: number; p: number; n: number; w: number; q: number; h: number[] }
  /** File i's new blocks are placed on volume v. */
  | { o: 'pv'; i: number; v: number }


/**
 * Apply one logical op to the in-memory state; returns the extents it took out of
 * maps (exec() turns them into frees through the reference counts, which replay
 * leaves alone: mount rebuilds them from the extents).
 */
export function apply(c: FsCore, op: Op, replay = false): Extent[] {
  const bad = (why: string) => err('EIO', `journal op ${op.o} inconsistent: ${why}`)
  // every inode an op reaches may change: the next checkpoint writes its segment again
  const node = (i: number) => { const n = c.inodes.get(i); if (!n) throw bad(`no inode ${i}`); c.stateChanged.add(i); return n }
  const dir = (i: number) => { const n = node(i); if (!n.entries) throw bad(`inode ${i} not a directory`); return n }
  const snap = (i: number) => { const n = node(i); if (!n.snapOf) throw bad(`inode ${i} not a snapshot`); return n }
  if ('st' in op && op.st) c.genSeen = Math.max(c.genSeen, Math.floor(op.st / STAMP_GEN))
  const stamp = (n: Inode, st: number) => { if (st > n.stamp) n.stamp = st }
  const dropSnap = (s: Inode): Extent[] => {
    if (c.inodes.get(s.snapOf)?.snaps?.delete(s.snapName)) c.stateChanged.add(s.snapOf)
    c.inodes.delete(s.ino)
    dropped(c, s)
    return s.ext.release()
  }
  const dropInode = (n: Inode): Extent[] => {
    c.inodes.delete(n.ino)
    c.dirtyAttrs.delete(n.ino)
    c.lazyAttrs.delete(n.ino)
    dropped(c, n)
    // a deleted disk takes its snapshots along; clones keep their blocks by reference
    // concat, not push(...): a map's extents as arguments overflow the stack past ~120k
    let out = n.ext.release()
    for (const s of n.snaps?.values() ?? []) out = out.concat(dropSnap(node(s)))
    return out
  }
  /** keep: the inode is open; at its last name it becomes an orphan instead of going. */
  const dropEntry = (d: Inode, name: string, t: number, keep = false): Extent[] => {
    const i = d.entries!.get(name)
    if (i === undefined) throw bad(`no entry ${name}`)
    const n = node(i)
    d.entries!.delete(name)
    c.nameChanged(d.ino, name)
    d.mtime = d.ctime = t
    if (n.isDir) { d.nlink--; c.inodes.delete(i); return [] }
    n.nlink--
    n.ctime = t
    if (n.nlink > 0 || keep) return []
    return dropInode(n)
  }
  const newFile = (p: number, name: string, i: number, m: number, u: number, g: number, t: number, v: number) => {
    const d = dir(p)
    if (d.entries!.has(name) || c.inodes.has(i)) throw bad(`${name} exists`)
    const isDir = (m & S_IFMT) === S_IFDIR
    const n = new Inode(i, m, u, g, 0, isDir ? 2 : 1, t, t, t, v, p)
    if (isDir) { n.entries = new Dir(); d.nlink++ }
    c.inodes.set(i, n)
    c.stateChanged.add(i)
    d.entries!.set(name, i)
    c.nameChanged(d.ino, name)
    d.mtime = d.ctime = t
    c.nextIno = Math.max(c.nextIno, i + 1)
    return n
  }
  switch (op.o) {
    case 'mk': {
      const n = newFile(op.p, op.n, op.i, op.m, op.u, op.g, op.t, op.v)
      if (op.l !== undefined) { n.target = op.l; n.size = Buffer.byteLength(op.l) }
      n.rdev = op.r ?? 0
      return []
    }
    case 'rm': return dropEntry(dir(op.p), op.n, op.t, !!op.k)
    case 'ln': {
      const n = node(op.i), d = dir(op.p)
      if (n.isDir || n.snapOf || n.nlink === 0) throw bad(`inode ${op.i} cannot take a link`)
      if (d.entries!.has(op.n)) throw bad(`${op.n} exists`)
      d.entries!.set(op.n, op.i)
      c.nameChanged(d.ino, op.n)
      n.nlink++
      n.ctime = d.mtime = d.ctime = op.t
      return []
    }
    case 'or': {
      const n = node(op.i)
      if (!n.isOrphan) throw bad(`inode ${op.i} is not an orphan`)
      return dropInode(n)
    }
    case 'mv': {
      const s = dir(op.p), d = dir(op.q)
      const i = s.entries!.get(op.n)
      if (i === undefined) throw bad(`no entry ${op.n}`)
      const n = node(i)
      let freed: Extent[] = []
      const old = d.entries!.get(op.m)
      if (old === i) return []
      if (op.x) { exchange(c, s, op.n, d, op.m, op.t); return [] }
      if (old !== undefined) freed = dropEntry(d, op.m, op.t, !!op.k)
      s.entries!.delete(op.n)
      d.entries!.set(op.m, i)
      c.nameChanged(s.ino, op.n)
      c.nameChanged(d.ino, op.m)
      if (n.isDir && s !== d) { s.nlink--; d.nlink++; n.parent = op.q }
      s.mtime = s.ctime = d.mtime = d.ctime = n.ctime = op.t
      return freed
    }
    case 'tr': {
      const n = node(op.i)
      // sizes are journaled at commit time, so do not trust n.size here: no block
      // past the new end may survive, whatever the size was
      const freed = n.ext.punch(Math.ceil(op.s / BS), Infinity)
      markDirty(c, n, Math.ceil(op.s / BS), Infinity)
      n.size = op.s
      n.mtime = n.ctime = op.t
      stamp(n, op.st)
      return freed
    }
    case 'ph': {
      const n = node(op.i)
      n.mtime = n.ctime = op.t
      stamp(n, op.st)
      markDirty(c, n, op.b0, op.b1)
      return n.ext.punch(op.b0, op.b1)
    }
    case 'at': {
      if (!c.inodes.has(op.i)) { if (replay) return []; throw bad(`no inode ${op.i}`) }
      const n = node(op.i)
      n.mode = op.m; n.uid = op.u; n.gid = op.g; n.size = op.s; n.ctime = op.c
      n.atime = op.a; n.atimeNs = op.an ?? 0; n.mtime = op.mt; n.mtimeNs = op.mn ?? 0
      stamp(n, op.st ?? 0)
      return []
    }
    case 'xa': {
      const n = node(op.i)
      if (op.v === null) n.xattr.delete(op.n)
      else n.xattr.set(op.n, Buffer.from(op.v, 'base64'))
      n.ctime = op.t
      return []
    }
    case 'ex': {
      const n = node(op.i)
      const out: Extent[] = []
      for (let k = 0; k < op.e.length; k += 4) {
        out.push(...n.ext.punch(op.e[k], op.e[k] + op.e[k + 3]))
        n.ext.insert(op.e[k], op.e[k + 1], op.e[k + 2], op.e[k + 3])
        markDirty(c, n, op.e[k], op.e[k] + op.e[k + 3])
      }
      stamp(n, op.st ?? 0)
      return out
    }
    case 'sn': {
      const f = node(op.i)
      if (f.isDir || f.snapOf) throw bad(`inode ${op.i} cannot have snapshots`)
      if (f.snaps?.has(op.n) || c.inodes.has(op.s)) throw bad(`snapshot ${op.n} exists`)
      const s = new Inode(op.s, S_IFREG | 0o444, f.uid, f.gid, op.z, 0, op.t, op.t, op.t, f.vol, 0)
      s.ext = f.ext.clone(c.copied)
      rebase(c, s, f)
      s.xattr = new Map(f.xattr)
      s.snapOf = f.ino
      s.snapName = op.n
      s.stamp = op.st
      c.inodes.set(op.s, s)
      c.stateChanged.add(op.s)
      ;(f.snaps ??= new Map()).set(op.n, op.s)
      c.nextIno = Math.max(c.nextIno, op.s + 1)
      return []
    }
    case 'sd': return dropSnap(snap(op.s))
    case 'rv': {
      const f = node(op.i), s = snap(op.s)
      const out = f.ext.release()
      f.ext = s.ext.clone(c.copied)
      rebase(c, f, s)
      f.size = s.size
      f.mtime = f.ctime = op.t
      stamp(f, op.st)
      return out
    }
    case 'cl': {
      const s = snap(op.s)
      const n = newFile(op.p, op.n, op.i, op.m, op.u, op.g, op.t, op.v)
      n.ext = s.ext.clone(c.copied)
      rebase(c, n, s)
      n.size = s.size
      n.xattr = new Map(s.xattr)
      stamp(n, op.st)
      return []
    }
    case 'sr': {
      const s = node(op.s), n = node(op.i)
      if (n.snapOf || n.isDir) throw bad(`inode ${op.i} cannot take shared blocks`)
      const from = s.ext.segments(op.b0, op.b1)
      const out = n.ext.punch(op.d, op.d + op.b1 - op.b0)
      for (const g of from) if (g.pb >= 0) n.ext.insert(op.d + g.fb - op.b0, g.vol, g.pb, g.len)
      markDirty(c, n, op.d, op.d + op.b1 - op.b0)
      if (op.z > n.size) n.size = op.z
      n.mtime = n.ctime = op.t
      stamp(n, op.st)
      return out
    }
    case 'rl': {
      const out: Extent[] = []
      for (let k = 0; k < op.h.length; k += 2) {
        const h = node(op.h[k]), fb = op.h[k + 1]
        const was = h.ext.punch(fb, fb + op.n)
        if (was.length !== 1 || was[0].vol !== op.v || was[0].pb !== op.p || was[0].len !== op.n) throw bad(`inode ${h.ino} does not map ${op.v}:${op.p}+${op.n} at ${fb}`)
        h.ext.insert(fb, op.w, op.q, op.n)
        markDirty(c, h, fb, fb + op.n)
        out.push(...was)
      }
      return out
    }
    case 'pv': node(op.i).vol = op.v; return []
  }
}

/** RENAME_EXCHANGE: entries a (in s) and b (in d) swap inodes; directories change parent. */
export function exchange(c: FsCore, s: Inode, a: string, d: Inode, b: string, t: number): void {
  const i = s.entries!.get(a), j = d.entries!.get(b)
  if (i === undefined || j === undefined) throw err('EIO', `journal op mv inconsistent: exchange needs ${a} and ${b}`)
  const n = c.inodes.get(i)!, m = c.inodes.get(j)!
  c.stateChanged.add(i).add(j) // s and d were marked by apply's dir()
  s.entries!.set(a, j)
  d.entries!.set(b, i)
  c.nameChanged(s.ino, a)
  c.nameChanged(d.ino, b)
  if (s !== d) {
    if (n.isDir) { n.parent = d.ino; s.nlink--; d.nlink++ }
    if (m.isDir) { m.parent = s.ino; d.nlink--; s.nlink++ }
  }
  s.mtime = s.ctime = d.mtime = d.ctime = n.ctime = m.ctime = t
}
