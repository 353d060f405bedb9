// The commit and the journal: the checkpoint (inodes, directories and xattrs as JSON
// on volume 0 blocks, named by a record in one of two alternating areas; each file's
// extents in its tree: trees.ts) and the circular journal of op records (ext4
// data=ordered / XFS-like). A commit flushes the data volumes, then writes the queued
// ops as one record, or a checkpoint when the journal is half full, and flushes volume
// 0. A checkpoint applies the changes since the last one to the trees and commits the
// store first, then writes its state and flushes it; its record names that commit and
// those blocks. Mount loads the newest valid checkpoint and the maps from the trees,
// replays the records of its epoch (nonce) in seq order until the first bad one,
// rebuilds the free maps from the extents, the store's blocks and the state's, and
// starts a new epoch with a fresh checkpoint. A version 1 or 2 fs (whole state with
// extents in VCK1 checkpoints) is converted on mount: loaded as before, its trees built
// by that first checkpoint, then the version 3 superblock written; a crash before that
// leaves the old fs.
import { randomBytes } from 'crypto'
import type { FsCore } from './core'
import { BtStore } from './btree/store'
import { Dir } from './dir'
import { Inode, ROOT, err } from './inode'
import {
  BS, CK_V1, CK_V2, JR_HDR, JR_OPS, JR_WRAP, SB_VERSION, decodeRecordHeader, encodeCheckpoint, encodeRecord,
  readCheckpoint, recordCrcOk, recordLen, writeSuperblock,
} from './layout'
import { STATE_CHECK, StateImage, type StatePlan, encodePointer, heldRuns, imageOf, planState, readState, segmentsOf, stateBytes, verifyPlan, wholePayload, wholeState, writeSegments } from './state'
import { Op, apply } from './ops'
import { orphans } from './namespace'
import { buildFree } from './space'
import { applyTrees, captureTrees, checkpointNeed, loadMaps, markDirty, metaBlocks, openStore, startStore, stateNeed, treesDurable } from './trees'

export async function load(c: FsCore): Promise<void> {
  const { sb } = c
  const v0 = c.vols[0]
  const converting = sb.version < SB_VERSION
  const cks = await Promise.all(sb.ckpt.map((off) => readCheckpoint(v0, off, sb.ckptLen, converting ? CK_V1 : CK_V2)))
  let slot = -1
  for (let i = 0; i < 2; i++) if (cks[i] && (slot < 0 || cks[i]!.h.seq > cks[slot]!.h.seq)) slot = i
  if (slot < 0) throw err('EIO', 'no valid checkpoint on volume 0')
  const ck = cks[slot]!
  const { image, segs } = await readState(v0, ck.payload, sb.dataStart, v0.size / BS)
  const storeSeq = deserialize(c, image)
  let meta: number[] = []
  if (!converting) {
    meta = [...await openStore(c, storeSeq), ...sb.store!]
    await loadMaps(c)
  }
  c.ckSlot = slot
  c.nonce = ck.h.nonce
  c.lastCkptLen = segs.size ? stateBytes(segs) : ck.payload.length
  // replay the journal of this checkpoint's epoch
  const jl = sb.journalLen
  const jbuf = Buffer.alloc(jl)
  await v0.read(jbuf, sb.journal)
  let pos = ck.h.jstart, seq = ck.h.seq + 1, used = 0
  for (;;) {
    if (pos >= jl) pos = 0
    const hb = jbuf.subarray(pos, pos + JR_HDR)
    const h = decodeRecordHeader(hb)
    if (!h || h.seq !== seq || h.nonce !== ck.h.nonce) break
    const rl = recordLen(h.len)
    if (pos + rl > jl) break
    const payload = jbuf.subarray(pos + JR_HDR, pos + JR_HDR + h.len)
    if (!recordCrcOk(hb, payload, h.crc)) break
    seq++
    if (h.type === JR_WRAP) { used += jl - pos; pos = 0; continue }
    if (h.type !== JR_OPS) break
    let ops: Op[]
    try { ops = JSON.parse(payload.toString()) } catch { break }
    for (const op of ops) apply(c, op, true)
    pos += rl
    used += rl
    c.replayed.records++
    c.replayed.ops += ops.length
    c.replayed.bytes += rl
  }
  c.seq = seq
  c.head = pos >= jl ? 0 : pos
  c.tail = ck.h.jstart
  c.sinceCkpt = used
  c.gen = Math.max(c.gen, c.genSeen) + 1
  c.ctr = 0
  // rebuild the free maps and reference counts from the extents
  const errors: string[] = []
  const built = buildFree(c, errors, [], [...meta.map((b) => ({ start: b, len: 1 })), ...heldRuns(segs)])
  c.free = built.free
  c.refs = built.refs
  c.counting = true
  if (errors.length) throw err('EIO', `fs metadata inconsistent, refusing to mount: ${errors[0]}`)
  c.storeBlocks = meta.length
  c.stateSegs = segs
  c.stateNextIno = image.nextIno
  if (converting) await newStore(c)
  startStore(c)
  // files unlinked while open when the last run ended: nobody holds them now
  for (const ino of orphans(c)) c.exec({ o: 'or', i: ino })
  // start a new epoch: stale records of a crashed run can never be replayed later
  c.wantCkpt = true
  await c.commit()
  if (converting) {
    // last: until this superblock is durable the fs is the old one (its VCK1 checkpoint
    // and journal untouched, the trees in blocks it has free)
    const next = { ...c.sb, version: SB_VERSION, seq: (c.sb.seq ?? 0) + 1 } as const
    await writeSuperblock(v0, next)
    c.sb = next
    c.events.publish('fs.converted', { from: sb.version, to: SB_VERSION, inodes: c.inodes.size })
  }
}

/** A store for a converted fs: its two superblock blocks from volume 0's free space. */
async function newStore(c: FsCore): Promise<void> {
  const a = c.free[0].allocLast(), b = c.free[0].allocLast()
  if (a === null || b === null) throw err('ENOSPC', 'no space on volume 0 to convert the fs to extent trees')
  c.storeBlocks = 2
  c.sb = { ...c.sb, store: [a, b] }
  await BtStore.format(c.vols[0], c.sb.store!)
  await openStore(c)
}

/** Every inode's image (mkfs's state, and what VSM_FS_STATE_VERIFY checks a checkpoint's plan against). */
export function captureInodes(c: FsCore): { nextIno: number; gen: number; inodes: [Inode, unknown[]][] } {
  const inodes: [Inode, unknown[]][] = []
  for (const n of c.inodes.values()) inodes.push([n, imageOf(n)])
  return { nextIno: c.nextIno, gen: c.gen, inodes }
}

/** The inode images with each map's tree root as the trees' commit left it (field 12). */
function withRoots(images: [Inode, unknown[]][], roots: Map<Inode, number>): unknown[][] {
  return images.map(([n, a]) => { a[12] = roots.get(n) ?? n.root; return a })
}

/** The whole state as one JSON (version 2): what mkfs writes into the area. */
export function serialize(st: ReturnType<typeof captureInodes>, roots: Map<Inode, number>, storeSeq: number): Buffer {
  return wholePayload({ nextIno: st.nextIno, gen: st.gen, store: storeSeq }, withRoots(st.inodes, roots))
}

/**
 * Load a checkpoint's inodes: version 2 names each map's tree root (read by loadMaps),
 * version 1 (an fs being converted) holds the extents, all then to be written to trees.
 * Returns the store commit a version 2 checkpoint names.
 */
export function deserialize(c: FsCore, st: StateImage): number {
  if (st.v !== 1 && st.v !== 2) throw err('EIO', `unknown checkpoint version ${st.v}`)
  c.nextIno = st.nextIno
  c.inodes.clear()
  // the arrays captureInodes made, as JSON gave them back
  for (const a of st.inodes as any[][]) {
    const n = new Inode(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10])
    if (a[11]) n.entries = Dir.of(a[11])
    if (st.v === 2) n.root = a[12]
    else {
      const f: number[] = a[12]
      for (let i = 0; i < f.length; i += 4) n.ext.insert(f[i], f[i + 1], f[i + 2], f[i + 3])
      if (f.length) markDirty(c, n, 0, Infinity)
    }
    for (const [k, v] of a[13]) n.xattr.set(k, Buffer.from(v, 'base64'))
    if (a[14]) n.snaps = new Map(a[14])
    n.snapOf = a[15] ?? 0
    n.snapName = a[16] ?? ''
    n.stamp = a[17] ?? 0
    n.target = a[18] ?? ''
    n.rdev = a[19] ?? 0
    n.atimeNs = a[20] ?? 0
    n.mtimeNs = a[21] ?? 0
    c.inodes.set(n.ino, n)
  }
  c.gen = st.gen ?? 0
  if (!c.inodes.get(ROOT)?.isDir) throw err('EIO', 'checkpoint has no root directory')
  return st.store ?? 0
}

/**
 * The state, `extra` bytes more, might not find blocks on volume 0 for the next
 * checkpoint and the one after it (each is written before its predecessor's blocks
 * are freed): refuse growth.
 */
export function metaNearFull(c: FsCore, extra = 0): boolean {
  return 2 * stateNeed(c, extra) + checkpointNeed(c) > c.free[0].free + c.stateHeld + c.stateTaken
}

/**
 * Refuse metadata growth when the next checkpoint's state would not find room on
 * volume 0. The estimate counts journal bytes since the last checkpoint; when it says
 * full, take a checkpoint first to measure exactly.
 */
export async function ensureMeta(c: FsCore, extra: number): Promise<void> {
  if (!metaNearFull(c, extra)) return
  if (c.sinceCkpt > 0 || c.opsBytes > 0) { c.wantCkpt = true; await c.commit() }
  if (metaNearFull(c, extra)) throw err('ENOSPC', 'no space left for fs metadata')
}

export function attrOp(n: Inode): Op {
  return { o: 'at', i: n.ino, m: n.mode, u: n.uid, g: n.gid, s: n.size, a: n.atime, mt: n.mtime, c: n.ctime, st: n.stamp,
    ...(n.atimeNs ? { an: n.atimeNs } : {}), ...(n.mtimeNs ? { mn: n.mtimeNs } : {}) }
}

export async function doCommit(c: FsCore): Promise<void> {
  if (c.broken) throw err('EIO', `fs unusable after an I/O error: ${c.broken.message}`)
  // ---- synchronous snapshot: which ops, which frees, which volumes
  const ops = c.ops
  c.ops = []
  c.opsBytes = 0
  // attributes changed in place (writes, atime): their inodes' images differ too
  for (const i of c.lazyAttrs) c.stateChanged.add(i)
  for (const i of c.dirtyAttrs) { c.stateChanged.add(i); const n = c.inodes.get(i); if (n) ops.push(attrOp(n)) }
  c.dirtyAttrs.clear()
  if (ops.length) {
    for (const i of c.lazyAttrs) { const n = c.inodes.get(i); if (n) ops.push(attrOp(n)) }
    c.lazyAttrs.clear()
  }
  const frees = c.pendingFree
  c.pendingFree = []
  const vols = [...c.dirtyVols]
  c.dirtyVols.clear()
  const jl = c.sb.journalLen
  let ck: { seq: number; nextIno: number; gen: number; plan: StatePlan; whole: [Inode, unknown[]][] | null; trees: ReturnType<typeof captureTrees> } | null = null
  const recs: { buf: Buffer; pos: number }[] = []
  let recBytes = 0
  let ckSlot = c.ckSlot, ckNonce = c.nonce, ckHead = c.head
  if (ops.length || c.wantCkpt) {
    let useCk = c.wantCkpt || metaNearFull(c)
    let payload: Buffer | null = null
    if (!useCk) {
      payload = Buffer.from(JSON.stringify(ops))
      const rl = recordLen(payload.length)
      const wrap = c.head + rl > jl
      const need = (wrap ? jl - c.head : 0) + rl
      const used = (c.head - c.tail + jl) % jl
      if (used + need > jl / 2) useCk = true
    }
    if (useCk) {
      c.wantCkpt = false
      c.lazyAttrs.clear()
      const changed = c.stateChanged, names = c.namesChanged
      c.stateChanged = new Set()
      c.namesChanged = new Map()
      const whole = STATE_CHECK.verify ? captureInodes(c).inodes : null
      ck = { seq: c.seq++, nextIno: c.nextIno, gen: c.gen, plan: planState(c, changed, names), whole, trees: captureTrees(c) }
      ckSlot = 1 - c.ckSlot
      ckNonce = randomBytes(4).readUInt32LE(0)
      ckHead = c.head
      c.nonce = ckNonce
    } else {
      let pos = c.head
      const rl = recordLen(payload!.length)
      if (pos + rl > jl) {
        recs.push({ buf: encodeRecord(JR_WRAP, c.seq++, c.nonce, Buffer.alloc(0)), pos })
        recBytes += jl - pos
        pos = 0
      }
      recs.push({ buf: encodeRecord(JR_OPS, c.seq++, c.nonce, payload!), pos })
      recBytes += rl
      pos += rl
      c.head = pos >= jl ? 0 : pos
    }
  }
  // ---- data first, then the commit record (data=ordered)
  try {
    await Promise.all(vols.map((v) => c.vols[v].flush()))
    c.counters.commits++
    c.counters.flushes += vols.length
    if (ck) {
      c.counters.checkpoints++
      const w0 = c.store!.stats.nodesWritten
      const roots = await applyTrees(c, ck.trees)
      // the nodes and the store's superblock
      c.counters.metaBytes += (c.store!.stats.nodesWritten - w0 + 1) * BS
      const head = { nextIno: ck.nextIno, gen: ck.gen, store: c.store!.committedSeq }
      const segments = await segmentsOf(withRoots(ck.plan.images, roots), ck.plan.buckets)
      c.counters.stateInodes += ck.plan.images.length
      for (const k of segments.keys()) if (typeof k === 'string') c.counters.stateBuckets++
      if (ck.whole) verifyPlan(c, await segmentsOf(withRoots(ck.whole, roots)), segments, ck.plan)
      let bytes = 0
      for (const b of segments.values()) bytes += b.length
      for (const k of ck.plan.same) bytes += c.stateSegs.get(k)!.bytes
      const w = await writeSegments(c, segments, ck.plan)
      const payload = w ? encodePointer(head, w.segs) : await wholeState(c, segments, ck.plan, head)
      const rec = encodeCheckpoint({ seq: ck.seq, nonce: ckNonce, jstart: ckHead, len: payload.length }, payload)
      if (rec.length > c.sb.ckptLen) throw err('ENOSPC', `no room on volume 0 for the fs state (${bytes} bytes)`)
      c.counters.metaBytes += rec.length + (w?.written ?? 0)
      await c.vols[0].write(rec, c.sb.ckpt[ckSlot])
      await c.vols[0].flush()
      treesDurable(c, roots)
      // the segments this state replaced are needed no more: a mount reads this record
      for (const r of w ? w.freed : heldRuns(c.stateSegs)) c.free[0].release(r.start, r.len)
      c.stateSegs = w?.segs ?? new Map()
      c.stateNextIno = ck.nextIno
      c.ckSlot = ckSlot
      c.tail = ckHead
      c.lastCkptLen = bytes
      c.sinceCkpt = 0
    } else if (recs.length) {
      c.counters.records += recs.length
      for (const r of recs) c.counters.metaBytes += r.buf.length
      if (recs.length > 1 || c.head === 0) c.counters.wraps++
      await Promise.all(recs.map((r) => c.vols[0].write(r.buf, c.sb.journal + r.pos)))
      await c.vols[0].flush()
      c.sinceCkpt += recBytes
    }
  } catch (e) {
    c.broken = e as Error
    // what the fs took in memory may now differ from what is durable: it serves nothing
    // more, and only a restart (which replays the journal) brings it back
    c.events.publish('fs.broken', { reason: `commit failed: ${(e as Error).message}`, fix: 'remedy the cause, then restart vsm (vsm down --force; vsm up): everything committed before is replayed' }, 'error')
    throw err('EIO', `commit failed: ${(e as Error).message}`)
  }
  // blocks freed by the now-durable ops go back to their volume (a thin backing file
  // shrinks) before they may be reused: a discard landing after a new write would erase
  // it. One that fails only leaves the blocks allocated below.
  await Promise.all(frees.map((f) => c.vols[f.vol].discard?.(f.start * BS, f.len * BS).catch(() => {})))
  for (const f of frees) c.free[f.vol].release(f.start, f.len)
}

/** Journal activity since mount (commits, records, wraps, checkpoints, data flushes, metadata bytes written). */
export function journalStats(c: FsCore) {
  return { ...c.counters, journalBytes: c.sb.journalLen, used: (c.head - c.tail + c.sb.journalLen) % c.sb.journalLen, metaBlocks: metaBlocks(c) }
}

export async function close(c: FsCore): Promise<void> {
  if (c.closed) return
  while (c.inflight > 0) await new Promise<void>((r) => c.idleWaiters.push(r))
  if (c.timer) { clearTimeout(c.timer); c.timer = null }
  if (!c.broken) {
    c.wantCkpt = true
    await c.commit()
    if (c.commitRunning || c.commitNext) await c.commit()
  }
  c.closed = true
}
