// A sorted sequence held in chunks of at most `max` items: the leaves of a B+tree
// without its inner levels (a binary search over the chunks' first keys finds the
// chunk). An edit moves the items of the chunks it touches, not of the whole sequence,
// and a copy shares the chunks until either side changes one. The extent maps and
// reference counts of a disk fragmented by copy-on-write writes hold hundreds of
// thousands of runs: as plain arrays, each write spliced all of them.
//
// Each chunk array knows how many sequences hold it, so a copy costs one count per
// chunk, and whoever counts references to the items (the fs's block counts) can count
// per distinct array: told of every array a sequence copies out of a shared one before
// changing it (onCopy), and of the arrays nobody holds after release().

/** A place in the sequence: item i of chunk c. {0, -1} is before the first item. */
export interface Pos { c: number; i: number }

/** How many sequences hold each chunk array (one, when it is not here: a sequence made it and never shared it). */
const holders = new WeakMap<object, number>()
const heldBy = (a: object): number => holders.get(a) ?? 1

export class Chunked<T> {
  /** None empty; keys ascending across them. */
  private chunks: T[][] = []
  private n = 0
  /** Told of the items of a shared chunk this sequence copies to change it; set by the first copy or ofChunks. */
  private onCopy?: (items: readonly T[]) => void

  constructor(private readonly key: (t: T) => number, private readonly max = 256) {}

  /** From items already in key order (the array is taken, not copied). */
  static of<T>(key: (t: T) => number, items: T[], max?: number): Chunked<T> {
    const s = new Chunked(key, max)
    s.put(0, 0, items)
    return s
  }

  /**
   * From chunks already in key order, none empty and none longer than max, that other
   * sequences may hold too (maps read from trees that share leaves): each array gains
   * one holder, and a sequence changes one in place only while it is the only holder.
   * The first time an array goes to a sequence here it has none.
   */
  static ofChunks<T>(key: (t: T) => number, chunks: T[][], onCopy: (items: readonly T[]) => void, max?: number): Chunked<T> {
    const s = new Chunked(key, max)
    if (chunks.some((a) => !a.length || a.length > s.max)) throw new RangeError('Chunked.ofChunks: a chunk is empty or too long')
    for (const a of chunks) holders.set(a, (holders.get(a) ?? 0) + 1)
    s.chunks = chunks
    s.n = chunks.reduce((t, a) => t + a.length, 0)
    s.onCopy = onCopy
    return s
  }

  get length(): number { return this.n }

  [Symbol.iterator](): IterableIterator<T> { return this.from({ c: 0, i: 0 }) }

  toArray(): T[] {
    return ([] as T[]).concat(...this.chunks)
  }

  /**
   * Call f on every item in order: a plain loop over the chunks, for the walks over a
   * whole map (a snapshot's counts, its unique bytes) that the iterator protocol slowed
   * to ~1 µs an item in the daemon, where the same loop sees arrays and maps.
   */
  forEach(f: (t: T) => void): void {
    const ch = this.chunks
    for (let c = 0; c < ch.length; c++) {
      const a = ch[c]
      for (let i = 0; i < a.length; i++) f(a[i])
    }
  }

  /** Call f on each chunk with whether another sequence holds it too. */
  forEachChunk(f: (items: readonly T[], shared: boolean) => void): void {
    for (const a of this.chunks) f(a, heldBy(a) > 1)
  }

  /** Whether the chunk of position p is held by another sequence too. */
  sharedAt(p: Pos): boolean {
    const a = this.chunks[p.c]
    return !!a && heldBy(a) > 1
  }

  get chunkCount(): number { return this.chunks.length }

  /** Chunk c's items, to look at (whoever keeps a summary per chunk drops it before an edit there). */
  chunk(c: number): readonly T[] | undefined { return this.chunks[c] }

  first(): T | undefined { return this.chunks[0]?.[0] }

  last(): T | undefined {
    const a = this.chunks[this.chunks.length - 1]
    return a?.[a.length - 1]
  }

  at(p: Pos): T | undefined { return this.chunks[p.c]?.[p.i] }

  /** Position of the last item whose key is <= k ({0, -1} when none is). */
  floor(k: number): Pos {
    const ch = this.chunks
    if (!ch.length) return { c: 0, i: -1 }
    // appending (a map read in order, a file written forward) needs no search
    const lc = ch.length - 1, la = ch[lc]
    if (this.key(la[la.length - 1]) <= k) return { c: lc, i: la.length - 1 }
    let lo = 0, hi = lc, c = 0
    while (lo <= hi) {
      const m = (lo + hi) >> 1
      if (this.key(ch[m][0]) <= k) { c = m; lo = m + 1 } else hi = m - 1
    }
    const a = ch[c]
    let i = -1
    lo = 0; hi = a.length - 1
    while (lo <= hi) {
      const m = (lo + hi) >> 1
      if (this.key(a[m]) <= k) { i = m; lo = m + 1 } else hi = m - 1
    }
    return { c, i }
  }

  /** The position after p; after the last item, {last chunk, its length}. */
  next(p: Pos): Pos {
    const ch = this.chunks
    if (!ch.length) return { c: 0, i: 0 }
    if (p.i + 1 < ch[p.c].length || p.c + 1 >= ch.length) return { c: p.c, i: p.i + 1 }
    return { c: p.c + 1, i: 0 }
  }

  /** The position before p ({0, -1} before the first item). */
  prev(p: Pos): Pos {
    if (p.i > 0) return { c: p.c, i: p.i - 1 }
    if (p.c > 0) return { c: p.c - 1, i: this.chunks[p.c - 1].length - 1 }
    return { c: 0, i: -1 }
  }

  /** The items from p on. An iterator object, not a generator: a walk over a map of 300k runs took 17 ms as `yield*`, 5 ms so. */
  from(p: Pos): IterableIterator<T> {
    const ch = this.chunks
    let c = p.c, i = Math.max(0, p.i)
    return {
      next(): IteratorResult<T> {
        for (; c < ch.length; c++, i = 0) if (i < ch[c].length) return { value: ch[c][i++], done: false }
        return { value: undefined, done: true }
      },
      [Symbol.iterator]() { return this },
    }
  }

  /** Replace the items from a up to (not including) b with `items`, which must keep the order. */
  splice(a: Pos, b: Pos, items: T[]): void {
    const ch = this.chunks
    if (!ch.length) { this.put(0, 0, items.slice()); return }
    if (a.c === b.c) {
      const len = ch[a.c].length - (b.i - a.i) + items.length
      if (len > 0 && len <= this.max && len >= this.max >> 2) {
        this.n += len - ch[a.c].length
        this.own(a.c).splice(a.i, b.i - a.i, ...items)
        return
      }
    }
    // the items kept from these chunks move to new arrays: counted as this sequence's first
    for (let c = a.c; c <= b.c && c < ch.length; c++) this.own(c)
    this.put(a.c, b.c - a.c + 1, ch[a.c].slice(0, a.i).concat(items, ch[b.c].slice(b.i)))
  }

  /** A copy sharing the chunks (one more holder each): whichever side changes one first copies it, and onCopy hears of it. */
  clone(onCopy: (items: readonly T[]) => void): Chunked<T> {
    const s = new Chunked(this.key, this.max)
    for (const a of this.chunks) holders.set(a, heldBy(a) + 1)
    s.chunks = this.chunks.slice()
    s.n = this.n
    s.onCopy = this.onCopy = onCopy
    return s
  }

  /** Let go of every chunk (the sequence is left empty); returns the arrays no sequence holds any more. */
  release(): T[][] {
    const gone: T[][] = []
    for (const a of this.chunks) {
      const h = heldBy(a) - 1
      holders.set(a, h)
      if (!h) gone.push(a)
    }
    this.chunks = []
    this.n = 0
    return gone
  }

  private own(c: number): T[] {
    const a = this.chunks[c], h = heldBy(a)
    if (h > 1) {
      const mine = a.slice()
      holders.set(a, h - 1)
      this.chunks[c] = mine
      this.onCopy!(mine)
    }
    return this.chunks[c]
  }

  /** Put `items` in place of `count` chunks from c, in chunks of at most max. */
  private put(c: number, count: number, items: T[]): void {
    for (let k = c; k < c + count; k++) this.n -= this.chunks[k].length
    this.n += items.length
    // a small remnant joins the chunk before it, so edits do not leave the sequence in crumbs
    if (items.length && items.length < this.max >> 2 && c > 0 && this.chunks[c - 1].length + items.length <= this.max) {
      items = this.own(c - 1).concat(items)
      c--
      count++
    }
    const parts: T[][] = []
    const pieces = Math.ceil(items.length / this.max)
    for (let k = 0; k < pieces; k++) parts.push(items.slice(Math.floor(k * items.length / pieces), Math.floor((k + 1) * items.length / pieces)))
    if (parts.length === 1 && count === 1) { this.chunks[c] = parts[0]; return }
    this.chunks = this.chunks.slice(0, c).concat(parts, this.chunks.slice(c + count))
  }
}
