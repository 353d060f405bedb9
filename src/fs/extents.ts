// Extent maps (file block -> volume block runs), the per-volume free-extent allocator,
// and the reference counts of shared blocks. All are sorted and searched by binary
// search; runs are coalesced. Maps and counts are Chunked, so an edit costs a chunk. Counts are built and
// adjusted in bulk by sweeps over run bounds held as sorted number arrays (RunBounds).
import { VsmError } from '../block/blockdev'
import { Chunked, Pos } from './chunked'

export interface Extent { fb: number; vol: number; pb: number; len: number }
/** A piece of a file block range: pb < 0 means a hole. */
export interface Segment { fb: number; len: number; vol: number; pb: number }

/** A file's extents in file block order, coalesced; a copy shares them until either side changes (see Chunked). */
export class ExtentMap {
  private ex: Chunked<Extent>
  total = 0

  constructor(chunk?: number) { this.ex = new Chunked((e) => e.fb, chunk) }

  /** Number of extents. */
  get count(): number { return this.ex.length }

  [Symbol.iterator](): IterableIterator<Extent> { return this.ex[Symbol.iterator]() }

  toArray(): Extent[] { return this.ex.toArray() }

  forEach(f: (e: Extent) => void): void { this.ex.forEach(f) }

  /** The block after the last mapped one (0 when empty). */
  end(): number {
    const e = this.ex.last()
    return e ? e.fb + e.len : 0
  }

  /** Position of the first extent ending after block b (holding b or after it). */
  private seek(b: number): Pos {
    const p = this.ex.floor(b), e = this.ex.at(p)
    return e && e.fb + e.len > b ? p : this.ex.next(p)
  }

  /** Cover [b0, b1) with mapped segments and holes, in order. */
  segments(b0: number, b1: number): Segment[] {
    const out: Segment[] = []
    let p = this.seek(b0)
    let b = b0
    while (b < b1) {
      const e = this.ex.at(p)
      if (!e || e.fb >= b1) { out.push({ fb: b, len: b1 - b, vol: -1, pb: -1 }); break }
      if (e.fb > b) { out.push({ fb: b, len: e.fb - b, vol: -1, pb: -1 }); b = e.fb; continue }
      const n = Math.min(e.fb + e.len, b1) - b
      out.push({ fb: b, len: n, vol: e.vol, pb: e.pb + (b - e.fb) })
      b += n
      p = this.ex.next(p)
    }
    return out
  }

  /** The extents from the one holding block b (or the first after b) to the last, in order. */
  from(b: number): IterableIterator<Extent> { return this.ex.from(this.seek(b)) }

  /** Physical block mapped at file block b, or -1. */
  lookup(b: number): { vol: number; pb: number } | null {
    const e = this.ex.at(this.ex.floor(b))
    return e && b < e.fb + e.len ? { vol: e.vol, pb: e.pb + (b - e.fb) } : null
  }

  /** Map [fb, fb+len) which must be unmapped; coalesces with neighbours. */
  insert(fb: number, vol: number, pb: number, len: number): void {
    if (len <= 0) return
    const p = this.ex.floor(fb), q = this.ex.next(p)
    const prev = this.ex.at(p), next = this.ex.at(q)
    if ((prev && prev.fb + prev.len > fb) || (next && next.fb < fb + len)) {
      throw new VsmError('EIO', `extent overlap inserting file block ${fb}+${len}`)
    }
    this.total += len
    const joinPrev = !!prev && prev.fb + prev.len === fb && prev.vol === vol && prev.pb + prev.len === pb
    const joinNext = !!next && fb + len === next.fb && next.vol === vol && pb + len === next.pb
    if (joinPrev && joinNext) this.ex.splice(p, this.ex.next(q), [{ fb: prev!.fb, vol, pb: prev!.pb, len: prev!.len + len + next!.len }])
    else if (joinPrev) this.ex.splice(p, q, [{ fb: prev!.fb, vol, pb: prev!.pb, len: prev!.len + len }])
    else if (joinNext) this.ex.splice(q, this.ex.next(q), [{ fb, vol, pb, len: len + next!.len }])
    else this.ex.splice(q, q, [{ fb, vol, pb, len }])
  }

  /** Unmap [b0, b1); returns the removed physical pieces (deleting a map of n extents is O(n)). */
  punch(b0: number, b1: number): Extent[] {
    const removed: Extent[] = []
    if (b1 <= b0) return removed
    const a = this.seek(b0)
    let q = a, first: Extent | undefined, last: Extent | undefined
    for (let e = this.ex.at(q); e && e.fb < b1; q = this.ex.next(q), e = this.ex.at(q)) {
      first ??= e
      last = e
      const s = Math.max(e.fb, b0), t = Math.min(e.fb + e.len, b1)
      removed.push({ fb: s, vol: e.vol, pb: e.pb + (s - e.fb), len: t - s })
      this.total -= t - s
    }
    if (!first || !last) return removed
    // what is left of the first and last extents keeps its place
    const kept: Extent[] = []
    if (first.fb < b0) kept.push({ fb: first.fb, vol: first.vol, pb: first.pb, len: b0 - first.fb })
    if (last.fb + last.len > b1) kept.push({ fb: b1, vol: last.vol, pb: last.pb + (b1 - last.fb), len: last.fb + last.len - b1 })
    this.ex.splice(a, q, kept)
    return removed
  }

  /**
   * A map read from its tree: the leaves' extents, each leaf's already joined
   * (joinSorted), in file block order. The arrays become the map's chunks, shared with
   * any other map read from the same leaves until either changes one (as after clone);
   * extents contiguous across two leaves are joined, an overlap is refused. `onCopy`: as
   * for clone.
   */
  static ofChunks(chunks: Extent[][], onCopy: (e: readonly Extent[]) => void, chunk?: number): ExtentMap {
    const m = new ExtentMap(chunk)
    const out: Extent[][] = []
    for (const a of chunks) {
      if (!a.length) continue
      for (let i = 0; i < a.length; i++) m.total += a[i].len
      const l = out[out.length - 1], last = l?.[l.length - 1], first = a[0]
      if (!last || !joinable(last, first)) { out.push(a); continue }
      out[out.length - 1] = l.slice(0, -1).concat([{ fb: last.fb, vol: last.vol, pb: last.pb, len: last.len + first.len }])
      if (a.length > 1) out.push(a.slice(1))
    }
    m.ex = Chunked.ofChunks((e) => e.fb, out, onCopy, chunk)
    return m
  }

  /**
   * A copy sharing the extents, in O(chunks): a map changes a chunk another holds only
   * after copying it, and `onCopy` hears of the copy's extents first (a new holder of
   * their blocks, for the block counts kept per distinct chunk).
   */
  clone(onCopy: (e: readonly Extent[]) => void): ExtentMap {
    const m = new ExtentMap()
    m.ex = this.ex.clone(onCopy)
    m.total = this.total
    return m
  }

  /** Drop the whole map (it is left empty): the extents of the chunks no other map holds, whose blocks lose a holder. */
  release(): Extent[] {
    this.total = 0
    return ([] as Extent[]).concat(...this.ex.release())
  }

  /** Call f on the extents of each chunk with whether another map holds that chunk too (all its blocks are then shared). */
  forEachChunk(f: (e: readonly Extent[], shared: boolean) => void): void { this.ex.forEachChunk(f) }

  /** Whether the chunk holding (or next after) file block b is held by another map too. */
  sharedAt(b: number): boolean { return this.ex.sharedAt(this.seek(b)) }

  flat(): number[] {
    const out: number[] = []
    for (const e of this) out.push(e.fb, e.vol, e.pb, e.len)
    return out
  }
}

/** Whether b, after a in file order, continues it (one run): throws if they overlap. */
function joinable(a: Extent, b: Extent): boolean {
  if (b.fb < a.fb + a.len) throw new VsmError('EIO', `extent overlap inserting file block ${b.fb}+${b.len}`)
  return a.fb + a.len === b.fb && a.vol === b.vol && a.pb + a.len === b.pb
}

/**
 * Extents in file block order with contiguous neighbours joined, as insert joins them
 * (the objects are taken: a joined one grows); an overlap is refused as insert does.
 */
export function joinSorted(extents: Extent[]): Extent[] {
  const out: Extent[] = []
  for (const e of extents) {
    if (e.len <= 0) continue
    const l = out[out.length - 1]
    if (l && joinable(l, e)) l.len += e.len
    else out.push(e)
  }
  return out
}

interface Free { start: number; len: number }

/**
 * Free-extent map of one volume's data area, with a next-fit rotor. The runs are a
 * Chunked sequence and each chunk's longest run is kept: free space fragmented by
 * copy-on-write holds up to a million one-block runs, and as one array every
 * allocation spliced all of them and a write no single run could hold scanned them
 * all once per piece (2 s for 1 MiB at a million runs).
 */
export class FreeMap {
  private fr: Chunked<Free>
  free = 0
  /** The block after the last data allocation: where the next one looks first. */
  private rotor: number
  /** Each chunk's longest run, by chunk array; dropped for a chunk before it changes. */
  private longest = new WeakMap<readonly Free[], number>()

  constructor(readonly lo: number, readonly hi: number, chunk?: number) {
    this.fr = new Chunked((f) => f.start, chunk)
    this.rotor = lo
  }

  /** Build from allocated (possibly unsorted) runs; returns overlaps/out-of-range as errors. */
  static fromAllocated(lo: number, hi: number, runs: { start: number; len: number }[], errors: string[], chunk?: number): FreeMap {
    const m = new FreeMap(lo, hi, chunk)
    const sorted = runs.slice().sort((a, b) => a.start - b.start)
    const fr: Free[] = []
    let cur = lo
    for (const r of sorted) {
      if (r.start < lo || r.start + r.len > hi || r.len <= 0) { errors.push(`run ${r.start}+${r.len} outside data area [${lo},${hi})`); continue }
      if (r.start < cur) { errors.push(`block ${r.start}+${r.len} allocated twice`); cur = Math.max(cur, r.start + r.len); continue }
      if (r.start > cur) { fr.push({ start: cur, len: r.start - cur }); m.free += r.start - cur }
      cur = r.start + r.len
    }
    if (cur < hi) { fr.push({ start: cur, len: hi - cur }); m.free += hi - cur }
    m.fr = Chunked.of((f) => f.start, fr, chunk)
    return m
  }

  /** The free runs in order (copies of the map's own). */
  runs(): Free[] { return this.fr.toArray().map((f) => ({ ...f })) }

  /** Replace the runs from a up to b with `items`, the chunks it touches first forgetting their longest run. */
  private edit(a: Pos, b: Pos, items: Free[]): void {
    for (let c = a.c; c <= b.c; c++) this.changed(c)
    this.fr.splice(a, b, items)
  }

  private changed(c: number): void {
    const a = this.fr.chunk(c)
    if (a) this.longest.delete(a)
  }

  private longestIn(c: number): number {
    const a = this.fr.chunk(c)!
    let m = this.longest.get(a)
    if (m === undefined) {
      m = 0
      for (const f of a) if (f.len > m) m = f.len
      this.longest.set(a, m)
    }
    return m
  }

  /** Take `len` blocks starting exactly at `start` from the free run at p. */
  private take(p: Pos, start: number, len: number): void {
    const f = this.fr.at(p)!
    const fEnd = f.start + f.len
    this.free -= len
    this.changed(p.c)
    if (start === f.start && len === f.len) this.edit(p, this.fr.next(p), [])
    else if (start === f.start) { f.start += len; f.len -= len }
    else if (start + len === fEnd) f.len -= len
    else {
      f.len = start - f.start
      const q = this.fr.next(p)
      this.edit(q, q, [{ start: start + len, len: fEnd - start - len }])
    }
  }

  /** The first run from the rotor on (wrapping round) that holds `need` blocks, or null. */
  private fit(need: number): Pos | null {
    let p = this.fr.floor(this.rotor)
    const f = this.fr.at(p)
    if (!f || f.start + f.len <= this.rotor) p = this.fr.next(p)
    const chunks = this.fr.chunkCount
    for (let k = 0; k <= chunks; k++) {
      // the rotor's chunk from the rotor on, the others whole, the rotor's chunk again last
      const c = (p.c + k) % chunks
      if (this.longestIn(c) < need) continue
      const a = this.fr.chunk(c)!
      for (let i = k === 0 ? p.i : 0; i < a.length; i++) if (a[i].len >= need) return { c, i }
    }
    return null
  }

  /** The longest run (the first of them); none is longer than `atMost`, so one that long ends the search. */
  private largest(atMost: number): Pos {
    let best = 0, m = -1
    for (let c = 0; c < this.fr.chunkCount && m < atMost; c++) {
      const l = this.longestIn(c)
      if (l > m) { best = c; m = l }
    }
    return { c: best, i: this.fr.chunk(best)!.findIndex((f) => f.len === m) }
  }

  /**
   * Allocate `count` blocks, preferring to continue at `goal` (the block after the
   * file's previous extent), then one run big enough (next-fit), then pieces, the
   * longest first.
   */
  alloc(count: number, goal: number): Free[] | null {
    if (count > this.free || count <= 0) return count <= 0 ? [] : null
    const out: Free[] = []
    let need = count
    if (goal >= this.lo && goal < this.hi) {
      const p = this.fr.floor(goal)
      const f = this.fr.at(p)
      if (f && goal < f.start + f.len) {
        const n = Math.min(need, f.start + f.len - goal)
        this.take(p, goal, n)
        out.push({ start: goal, len: n })
        need -= n
      }
    }
    // once no run holds what is needed, none holds more than the longest taken since
    let longest = Infinity
    while (need > 0) {
      const p = (need <= longest ? this.fit(need) : null) ?? this.largest(longest)
      const f = this.fr.at(p)!
      longest = f.len
      const n = Math.min(need, f.len)
      const s = f.start
      this.take(p, s, n)
      const last = out[out.length - 1]
      if (last && last.start + last.len === s) last.len += n
      else out.push({ start: s, len: n })
      need -= n
    }
    const end = out[out.length - 1]
    this.rotor = end.start + end.len
    return out
  }

  /**
   * One block from the top of the free space, the data's next-fit rotor left where it
   * was: metadata grows down from the end of the volume while data fills it from the
   * start, so tree nodes do not split files' runs.
   */
  allocLast(): number | null {
    const p = this.fr.floor(Infinity)
    const f = this.fr.at(p)
    if (!f) return null
    const b = f.start + f.len - 1
    this.take(p, b, 1)
    return b
  }

  /** Return a run to the free map, coalescing; a double free is an internal error. */
  release(start: number, len: number): void {
    if (len <= 0) return
    if (start < this.lo || start + len > this.hi) throw new VsmError('EIO', `free of ${start}+${len} outside data area`)
    const p = this.fr.floor(start), q = this.fr.next(p)
    const prev = this.fr.at(p), next = this.fr.at(q)
    if ((prev && prev.start + prev.len > start) || (next && next.start < start + len)) {
      throw new VsmError('EIO', `double free of block ${start}+${len}`)
    }
    this.free += len
    const jp = !!prev && prev.start + prev.len === start
    const jn = !!next && start + len === next.start
    if (jp) this.changed(p.c)
    if (jn) this.changed(q.c)
    if (jp && jn) { prev!.len += len + next!.len; this.edit(q, this.fr.next(q), []) }
    else if (jp) prev!.len += len
    else if (jn) { next!.start = start; next!.len += len }
    else this.edit(q, q, [{ start, len }])
  }

  isFree(b: number): boolean {
    const f = this.fr.at(this.fr.floor(b))
    return !!f && b < f.start + f.len
  }
}

/** A run of physical blocks and how many extent maps (files, snapshots) point at it. */
export interface RefRun { start: number; len: number; n: number }

/**
 * Reference counts of one volume's shared blocks. Only runs held by two or more maps
 * are kept (an allocated block absent from the map has count 1), so a disk without
 * snapshots or clones has an empty map and its write path pays one failed lookup.
 */
export class RefMap {
  private r: Chunked<RefRun>

  constructor(private readonly chunk?: number) { this.r = new Chunked((x) => x.start, chunk) }

  /** From shared runs sorted and coalesced (the array is taken, not copied). */
  static of(runs: RefRun[], chunk?: number): RefMap {
    const m = new RefMap(chunk)
    m.r = Chunked.of((x) => x.start, runs, chunk)
    return m
  }

  /** Number of shared runs. */
  get count(): number { return this.r.length }

  toArray(): RefRun[] { return this.r.toArray() }

  /** Position of the first shared run ending after block b (holding b or after it). */
  private seek(b: number): Pos {
    const p = this.r.floor(b), e = this.r.at(p)
    return e && e.start + e.len > b ? p : this.r.next(p)
  }

  /** Count of each piece of [start, start+len): absent runs count 1. */
  pieces(start: number, len: number): RefRun[] {
    const out: RefRun[] = []
    const end = start + len
    let p = this.seek(start)
    let b = start
    while (b < end) {
      const e = this.r.at(p)
      if (!e || e.start >= end) { out.push({ start: b, len: end - b, n: 1 }); break }
      if (e.start > b) { out.push({ start: b, len: e.start - b, n: 1 }); b = e.start; continue }
      const t = Math.min(e.start + e.len, end)
      out.push({ start: b, len: t - b, n: e.n })
      b = t
      p = this.r.next(p)
    }
    return out
  }

  /** How many blocks of [start, start+len) have count 1 (held by one map), without listing the pieces. */
  unshared(start: number, len: number): number {
    const end = start + len
    let shared = 0
    for (const e of this.r.from(this.seek(start))) {
      if (e.start >= end) break
      shared += Math.min(e.start + e.len, end) - Math.max(e.start, start)
    }
    return len - shared
  }

  /**
   * unshared() summed over disjoint runs (one map's): one walk along them sorted and
   * the shared runs, not a search per run.
   */
  unsharedIn(runs: RunBounds): number {
    const { starts, ends } = runs.sorted()
    const r = this.r.toArray()
    let total = 0, shared = 0, j = 0
    for (let i = 0; i < starts.length; i++) {
      const s = starts[i], e = ends[i]
      total += e - s
      while (j < r.length && r[j].start + r[j].len <= s) j++
      for (let k = j; k < r.length && r[k].start < e; k++) shared += Math.min(r[k].start + r[k].len, e) - Math.max(r[k].start, s)
    }
    return total - shared
  }

  /** True when any block of [start, start+len) is held by more than one map. */
  anyShared(start: number, len: number): boolean {
    if (!this.r.length) return false
    const e = this.r.at(this.r.floor(start + len - 1))
    return !!e && e.start + e.len > start
  }

  /** Add delta (+1 / -1) to the count of every block of the run; returns the pieces that dropped to 0. */
  adjust(start: number, len: number, delta: 1 | -1): { start: number; len: number }[] {
    if (len <= 0) return []
    const end = start + len
    if (delta === 1 && this.addShared(start, end)) return []
    const ps = this.pieces(start, len)
    const freed: { start: number; len: number }[] = []
    const keep: RefRun[] = []
    for (const p of ps) {
      const n = p.n + delta
      if (n === 0) freed.push({ start: p.start, len: p.len })
      else if (n >= 2) keep.push({ start: p.start, len: p.len, n })
    }
    // replace the entries overlapping [start, end) by their remnants outside it and `keep`
    const i0 = this.seek(start)
    let i1 = i0, first: RefRun | undefined, last: RefRun | undefined
    for (let e = this.r.at(i1); e && e.start < end; i1 = this.r.next(i1), e = this.r.at(i1)) { first ??= e; last = e }
    const repl: RefRun[] = []
    if (first && first.start < start) repl.push({ start: first.start, len: start - first.start, n: first.n })
    repl.push(...keep)
    if (last && last.start + last.len > end) repl.push({ start: end, len: last.start + last.len - end, n: last.n })
    // coalesce with each other and with the neighbours outside the range
    const lo = this.r.prev(i0), before = this.r.at(lo), after = this.r.at(i1)
    const merged: RefRun[] = []
    for (const x of [...(before ? [before] : []), ...repl, ...(after ? [after] : [])]) {
      const l = merged[merged.length - 1]
      if (l && l.start + l.len === x.start && l.n === x.n) l.len += x.len
      else merged.push({ ...x })
    }
    this.r.splice(before ? lo : i0, after ? this.r.next(i1) : i1, merged)
    return freed
  }

  /**
   * +1 over [start, end) when no run is counted there yet (each of its blocks goes from 1
   * to 2), joined to a neighbour of count 2 it touches; false, changing nothing, when some
   * run overlaps it. The common case of a chunk a map copies to change it: a splice of one
   * entry, where adjust()'s general path lists pieces and remnants for each run.
   */
  private addShared(start: number, end: number): boolean {
    const p = this.seek(start), after = this.r.at(p)
    if (after && after.start < end) return false
    const q = this.r.prev(p), before = this.r.at(q)
    const joinB = !!before && before.start + before.len === start && before.n === 2
    const joinA = !!after && after.start === end && after.n === 2
    const from = joinB ? before!.start : start, to = joinA ? end + after!.len : end
    this.r.splice(joinB ? q : p, joinA ? this.r.next(p) : p, [{ start: from, len: to - from, n: 2 }])
    return true
  }

  /**
   * adjust() over many runs (any order, overlapping ones counted once each) in one
   * sweep over them and the map: deleting a fragmented map costs O((runs + shared runs)
   * log) instead of a splice of the map per run.
   */
  adjustMany(runs: { start: number; len: number }[] | RunBounds, delta: 1 | -1): { start: number; len: number }[] {
    const rb = runs instanceof RunBounds ? runs : RunBounds.of(runs, true)
    // a few runs against a big map (a chunk copied from a fragmented snapshot's): a
    // splice each costs less than a sweep over every shared run
    if (rb.n < 64 || rb.n * 32 < this.r.length) {
      const freed: { start: number; len: number }[] = []
      for (let k = 0; k < rb.n; k++) for (const f of this.adjust(rb.starts[k], rb.ends[k] - rb.starts[k], delta)) freed.push(f)
      return freed
    }
    const { starts, ends } = rb.sorted()
    const m = starts.length
    const old = this.r.toArray(), out: RefRun[] = [], freed: RefRun[] = []
    // from one boundary (a run's start or end, an old shared run's) to the next: k runs over it, its old count
    let i = 0, j = 0, oi = 0, k = 0, reuse = 0
    // the new map's runs are the old runs the sweep has passed (old[0, oi): nothing reads
    // them again), rewritten: a fragmented volume has hundreds of thousands, and making
    // them all anew at every snapshot set the garbage collector off
    const emit = (start: number, len: number, n: number) => { if (addRun(out, start, len, n, reuse < oi ? old[reuse] : undefined)) reuse++ }
    let a = Math.min(m ? starts[0] : Infinity, old.length ? old[0].start : Infinity)
    for (;;) {
      while (i < m && starts[i] <= a) { k++; i++ }
      while (j < m && ends[j] <= a) { k--; j++ }
      while (oi < old.length && old[oi].start + old[oi].len <= a) oi++
      const inOld = oi < old.length && old[oi].start <= a
      let b = inOld ? old[oi].start + old[oi].len : oi < old.length ? old[oi].start : Infinity
      if (i < m && starts[i] < b) b = starts[i]
      if (j < m && ends[j] < b) b = ends[j]
      if (b === Infinity) break
      const was = inOld ? old[oi].n : 0
      if (k === 0) { if (was) emit(a, b - a, was) }
      else {
        const n = (was || 1) + delta * k
        if (n === 0) addRun(freed, a, b - a, 0)
        else if (n >= 2) emit(a, b - a, n)
      }
      a = b
    }
    this.r = Chunked.of((x) => x.start, out, this.chunk)
    return freed.map((f) => ({ start: f.start, len: f.len }))
  }

  /**
   * From allocated runs (any order, overlaps allowed): the shared runs and the union of
   * all. Starts and ends are sorted apart as numbers and merged (the count at a point is
   * starts minus ends before it): mount builds every volume's counts with this.
   */
  static fromRuns(runs: { start: number; len: number }[] | RunBounds): { refs: RefMap; union: { start: number; len: number }[] } {
    const { starts, ends } = (runs instanceof RunBounds ? runs : RunBounds.of(runs)).sorted()
    const shared: RefRun[] = []
    const union: { start: number; len: number }[] = []
    const m = starts.length
    let c = 0, at = 0, i = 0, j = 0
    // one event per step, ends first at a tie (no run between them either way)
    while (j < m) {
      const isStart = i < m && starts[i] < ends[j]
      const p = isStart ? starts[i] : ends[j]
      if (p > at && c > 0) {
        const u = union[union.length - 1]
        if (u && u.start + u.len === at) u.len += p - at
        else union.push({ start: at, len: p - at })
        if (c >= 2) addRun(shared, at, p - at, c)
      }
      if (isStart) { c++; i++ } else { c--; j++ }
      at = p
    }
    return { refs: RefMap.of(shared), union }
  }
}

/**
 * Append a run to sorted runs, joining the last when it ends where this starts with the
 * same count; else as `spare` rewritten, when given (true: spare was taken).
 */
function addRun(to: RefRun[], start: number, len: number, n: number, spare?: RefRun): boolean {
  const l = to[to.length - 1]
  if (l && l.start + l.len === start && l.n === n) { l.len += len; return false }
  if (!spare) { to.push({ start, len, n }); return false }
  spare.start = start; spare.len = len; spare.n = n
  to.push(spare)
  return true
}

/**
 * Runs as two growing number arrays, their starts and their ends: what the sweeps read,
 * without an object per run. Sorting sorts each array apart (which start went with which
 * end is lost; a count at a point needs only how many of each lie before it).
 */
export class RunBounds {
  starts = new Float64Array(16)
  ends = new Float64Array(16)
  n = 0
  private isSorted = true

  /** `nonEmpty`: only the runs with len > 0. */
  static of(runs: { start: number; len: number }[], nonEmpty = false): RunBounds {
    const b = new RunBounds()
    b.grow(runs.length)
    for (const x of runs) if (!nonEmpty || x.len > 0) b.add(x.start, x.len)
    return b
  }

  add(start: number, len: number): void {
    this.isSorted = false
    if (this.n === this.starts.length) this.grow(2 * this.n)
    this.starts[this.n] = start
    this.ends[this.n++] = start + len
  }

  private grow(size: number): void {
    if (size <= this.starts.length) return
    const s = new Float64Array(size), e = new Float64Array(size)
    s.set(this.starts.subarray(0, this.n))
    e.set(this.ends.subarray(0, this.n))
    this.starts = s
    this.ends = e
  }

  /** The starts and the ends, each sorted ascending in place (once: adjustMany sorts what a caller sorted before). */
  sorted(): { starts: Float64Array; ends: Float64Array } {
    const starts = this.starts.subarray(0, this.n), ends = this.ends.subarray(0, this.n)
    if (!this.isSorted) {
      sortBlocks(starts)
      sortBlocks(ends)
      this.isSorted = true
    }
    return { starts, ends }
  }

  /**
   * Whether some block lies in two of the runs: sorted apart, the k-th end passes the
   * next start (the count just after that start is then 2 or more).
   */
  overlaps(): boolean {
    const { starts, ends } = this.sorted()
    for (let k = 1; k < this.n; k++) if (ends[k - 1] > starts[k]) return true
    return false
  }

  clear(): void { this.n = 0; this.isSorted = true }
}

const RADIX_MIN = 4096
const scratch: { buf: Float64Array; count: Uint32Array } = { buf: new Float64Array(0), count: new Uint32Array(1 << 16) }

/**
 * Sort block numbers ascending in place: whole numbers below 2^48 by an LSD radix sort
 * on 16-bit digits (two passes below 2^32), several times faster than the native sort
 * on the hundreds of thousands of run bounds a mount or a snapshot of a fragmented map
 * sorts; anything else, or a short array, by the native sort.
 */
export function sortBlocks(a: Float64Array): void {
  const n = a.length
  if (n < RADIX_MIN) { a.sort(); return }
  let max = 0
  for (let i = 0; i < n; i++) {
    const x = a[i]
    if (!(x >= 0 && x < 2 ** 48 && Math.floor(x) === x)) { a.sort(); return }
    if (x > max) max = x
  }
  if (scratch.buf.length < n) scratch.buf = new Float64Array(n)
  const count = scratch.count
  let src: Float64Array = a, dst: Float64Array = scratch.buf.subarray(0, n)
  for (let div = 1; div <= max; div *= 1 << 16) {
    count.fill(0)
    // (x / div) | 0 keeps the low 32 bits of the quotient, & 0xffff this pass's digit
    for (let i = 0; i < n; i++) count[((src[i] / div) | 0) & 0xffff]++
    let sum = 0
    for (let d = 0; d < count.length; d++) { const c = count[d]; count[d] = sum; sum += c }
    for (let i = 0; i < n; i++) { const x = src[i]; dst[count[((x / div) | 0) & 0xffff]++] = x }
    const t = src; src = dst; dst = t
  }
  if (src !== a) a.set(src)
}
