// fsck of the mounted fs: the extent trees (nodes, their reference counts, each map
// equal to its tree), the checkpoint's state against its checksums, extents sorted and
// inside their files, the free map and the reference counts against what the extent
// maps, the store and the checkpoint's state imply, the directory tree, link counts,
// snapshots and orphans.
import type { FsCore } from './core'
import { Extent } from './extents'
import { MAX_FILE_SIZE, NODE_TYPES, ROOT, S_IFLNK, S_IFMT, checkName } from './inode'
import { BS } from './layout'
import { buildFree } from './space'
import { checkSegments, heldRuns } from './state'
import { checkMaps } from './trees'

/** Subtract sorted, coalesced interval lists: runs of a not covered by b. */
function subtractRuns(a: { start: number; len: number }[], b: { start: number; len: number }[]) {
  const out: { start: number; len: number }[] = []
  let j = 0
  for (const r of a) {
    let s = r.start
    const e = r.start + r.len
    while (j < b.length && b[j].start + b[j].len <= s) j++
    let k = j
    while (s < e && k < b.length && b[k].start < e) {
      if (b[k].start > s) out.push({ start: s, len: b[k].start - s })
      s = Math.max(s, b[k].start + b[k].len)
      k++
    }
    if (s < e) out.push({ start: s, len: e - s })
  }
  return out
}

function coalesce(runs: { start: number; len: number }[]) {
  const sorted = runs.slice().sort((x, y) => x.start - y.start)
  const out: { start: number; len: number }[] = []
  for (const r of sorted) {
    const l = out[out.length - 1]
    if (l && l.start + l.len >= r.start) l.len = Math.max(l.len, r.start + r.len - l.start)
    else out.push({ ...r })
  }
  return out
}

export function check(c: FsCore): Promise<{ ok: boolean; errors: string[]; leakedBytes: number }> {
  return c.withTrees(() => checkLocked(c))
}

async function checkLocked(c: FsCore): Promise<{ ok: boolean; errors: string[]; leakedBytes: number }> {
  const errors: string[] = []
  const meta = [...await checkMaps(c, errors), ...heldRuns(c.stateSegs)]
  await checkSegments(c.vols[0], c.stateSegs, errors)
  let leaked = 0
  const root = c.inodes.get(ROOT)
  if (!root || !root.isDir) errors.push('no root directory')
  // extents
  for (const n of c.inodes.values()) {
    if (!Number.isSafeInteger(n.size) || n.size < 0 || n.size > MAX_FILE_SIZE) errors.push(`inode ${n.ino}: bad size ${n.size}`)
    let last = -1, total = 0
    for (const e of n.ext) {
      if (e.fb < last) errors.push(`inode ${n.ino}: extents overlap or unsorted at file block ${e.fb}`)
      if (e.len <= 0) errors.push(`inode ${n.ino}: empty extent`)
      last = e.fb + e.len
      total += e.len
    }
    if (total !== n.ext.total) errors.push(`inode ${n.ino}: block count ${n.ext.total} != extents ${total}`)
    const pendingBlocks = n.pending.reduce((s, p) => Math.max(s, p.b1), 0)
    if (last > Math.max(Math.ceil(n.size / BS), pendingBlocks)) errors.push(`inode ${n.ino}: extent past EOF (block ${last}, size ${n.size})`)
    if (n.isDir && n.ext.total) errors.push(`directory ${n.ino} has data extents`)
  }
  // ownership, the free map and the reference counts (copy-on-write I/O in flight
  // still holds a reference to what it replaced)
  const claims: Extent[] = []
  for (const n of c.inodes.values()) for (const p of n.pending) claims.push(...p.replaced)
  const expected = buildFree(c, errors, claims, meta)
  for (let v = 0; v < c.vols.length; v++) {
    const actual = coalesce([...c.free[v].runs(), ...c.pendingFree.filter((f) => f.vol === v)])
    const exp = expected.free[v].runs()
    if (JSON.stringify(expected.refs[v].toArray()) !== JSON.stringify(c.refs[v].toArray())) {
      errors.push(`volume ${v}: reference counts differ from the extent maps (${c.refs[v].count} shared runs, ${expected.refs[v].count} expected)`)
    }
    for (const r of subtractRuns(actual, exp)) errors.push(`volume ${v}: blocks ${r.start}+${r.len} both free and allocated`)
    for (const r of subtractRuns(exp, actual)) leaked += r.len * BS
    let sum = 0
    for (const r of c.free[v].runs()) sum += r.len
    if (sum !== c.free[v].free) errors.push(`volume ${v}: free counter ${c.free[v].free} != map ${sum}`)
  }
  // directory tree
  const refs = new Map<number, number>()
  const seenDirs = new Set<number>()
  const stack = root ? [root] : []
  if (root) seenDirs.add(ROOT)
  while (stack.length) {
    const d = stack.pop()!
    let subdirs = 0
    for (const [name, i] of d.entries!) {
      try { checkName(name) } catch { errors.push(`directory ${d.ino}: bad name ${JSON.stringify(name)}`) }
      const ch = c.inodes.get(i)
      if (!ch) { errors.push(`directory ${d.ino}: entry ${name} -> missing inode ${i}`); continue }
      refs.set(i, (refs.get(i) ?? 0) + 1)
      if (ch.isDir) {
        subdirs++
        if (seenDirs.has(i)) { errors.push(`directory ${i} reachable twice`); continue }
        seenDirs.add(i)
        if (ch.parent !== d.ino) errors.push(`directory ${i}: parent ${ch.parent} but found in ${d.ino}`)
        stack.push(ch)
      } else if (!NODE_TYPES.has(ch.mode & S_IFMT) && (ch.mode & S_IFMT) !== S_IFLNK) errors.push(`inode ${i}: unknown type ${ch.mode.toString(8)}`)
    }
    if (d.nlink !== 2 + subdirs) errors.push(`directory ${d.ino}: nlink ${d.nlink} != ${2 + subdirs}`)
  }
  for (const n of c.inodes.values()) {
    if (n.ino === ROOT) continue
    if (n.snapOf) {
      if (c.inodes.get(n.snapOf)?.snaps?.get(n.snapName) !== n.ino) errors.push(`snapshot ${n.ino} (${n.snapName}): its file ${n.snapOf} does not list it`)
      continue
    }
    for (const [name, i] of n.snaps ?? []) if (c.inodes.get(i)?.snapOf !== n.ino) errors.push(`inode ${n.ino}: snapshot ${name} -> ${i} is not its snapshot`)
    const r = refs.get(n.ino) ?? 0
    if (!n.isReg && !n.isDir && n.ext.total) errors.push(`inode ${n.ino}: a ${(n.mode & S_IFMT).toString(8)} node has data extents`)
    if (n.isOrphan) {
      if (r) errors.push(`inode ${n.ino}: nlink 0 but ${r} entries`)
      else if (!c.opened.has(n.ino)) errors.push(`inode ${n.ino}: orphan nobody holds open`)
      continue
    }
    if (r === 0) errors.push(`inode ${n.ino}: not reachable from the root`)
    else if (!n.isDir && r !== n.nlink) errors.push(`inode ${n.ino}: nlink ${n.nlink} but ${r} entries`)
    if (n.ino >= c.nextIno) errors.push(`inode ${n.ino} >= next inode number ${c.nextIno}`)
  }
  return { ok: errors.length === 0, errors, leakedBytes: leaked }
}
