// A bounded cache of 4 KiB metadata pages (checksum tables, for now), so the memory
// the volume layer holds does not grow with device size: pages are read on first use
// and dropped least recently used first once the cache holds more than its capacity.
//
// A PagedArea is one owner's run of pages on a BlockDev. Changes are edits applied to
// the page in memory at once (an edit to a page still loading is queued and applied,
// in order, once the bytes arrive), so owners keep synchronous setters. A dirty page is
// written back by its owner's flush(), or earlier by the cache when it needs the room:
// an early write is no different from one issued at the next flush (neither is durable
// before the device's flush), so the owners' durability rules are unchanged.
import { BlockDev } from '../block/blockdev'
import { parseSize } from '../cli/units'

export const PAGE_BYTES = 4096
export const DEFAULT_CACHE_BYTES = 64 << 20

/** How an owner's pages look on disk. */
export interface PageFormat {
  /** True if page i is known never written: it starts as zeros, unread. */
  blank?(i: number): Promise<boolean>
  /** Turn the bytes read for page i into its contents, in place (e.g. blank a page of another owner). */
  loaded?(i: number, buf: Buffer): void
  /** Runs before page i is written (e.g. write first what says the page is in use). */
  beforeWrite?(i: number): Promise<void>
  /** Page i is about to be written: stamp what marks it as this owner's. */
  stamp?(i: number, buf: Buffer): void
}

class Page {
  readonly buf = Buffer.alloc(PAGE_BYTES)
  loading: Promise<void> | null = null
  /** Edits made while loading, applied in order once the bytes are in. */
  edits: ((buf: Buffer) => void)[] = []
  writing: Promise<void> | null = null
  dirty = false
  constructor(readonly area: PagedArea, readonly index: number) {}
}

export class PageCache {
  /** Resident pages, least recently used first (a Set keeps insertion order). */
  private readonly lru = new Set<Page>()
  /** Dirty pages being written back to make room, and that write-back. */
  private readonly evicting = new Map<Page, Promise<void>>()

  private capacityPages = 1

  constructor(capacityBytes: number) {
    this.capacityBytes = capacityBytes
  }

  get capacityBytes(): number { return this.capacityPages * PAGE_BYTES }

  set capacityBytes(n: number) {
    this.capacityPages = Math.max(1, Math.floor(n / PAGE_BYTES))
    this.trim()
  }

  /** Pages held now (tests, status). */
  get residentPages(): number { return this.lru.size }

  touch(p: Page): void {
    this.lru.delete(p)
    this.lru.add(p)
  }

  add(p: Page): void {
    this.lru.add(p)
    this.trim()
  }

  remove(p: Page): void {
    this.lru.delete(p)
  }

  /**
   * Resolves once the cache is within its capacity, or nothing more can be written back
   * to get there: readers wait here before adding a page, so dirty pages are written out
   * at the pace new ones come in, not piled up behind their write-backs.
   */
  room(): Promise<void> | undefined {
    return this.lru.size > this.capacityPages ? this.makeRoom() : undefined
  }

  private async makeRoom(): Promise<void> {
    while (this.lru.size > this.capacityPages) {
      this.trim()
      // pages loading or being written cannot go yet; once one settles, trim again
      const busy: Promise<void>[] = [...this.evicting.values()]
      for (const p of this.lru) {
        const w = p.loading ?? p.writing
        if (w) busy.push(w)
      }
      if (!busy.length) return
      await Promise.race(busy.map((w) => w.catch(() => {})))
    }
  }

  /** Drop clean pages beyond the capacity; start writing back dirty ones so they can go next. */
  trim(): void {
    let over = this.lru.size - this.capacityPages
    for (const p of this.lru) {
      if (over <= 0) return
      if (p.loading || p.writing) continue
      if (p.dirty) {
        if (this.evicting.has(p)) continue
        // a failed write-back leaves the page dirty: its owner's next flush retries and reports it
        this.evicting.set(p, p.area.writeOut(p).catch(() => {}).finally(() => {
          this.evicting.delete(p)
          this.trim()
        }))
        continue
      }
      this.lru.delete(p)
      p.area.forget(p)
      over--
    }
  }
}

/**
 * The cache the metadata pages of this process go through. VSM_TABLE_CACHE sets its
 * size (64M; a few K puts it under pressure, as the tests do).
 */
export const tableCache = new PageCache(DEFAULT_CACHE_BYTES)
if (process.env.VSM_TABLE_CACHE) tableCache.capacityBytes = parseSize(process.env.VSM_TABLE_CACHE)

export class PagedArea {
  private readonly pages = new Map<number, Page>()
  private readonly dirty = new Set<Page>()

  constructor(private readonly cache: PageCache, private readonly io: BlockDev, readonly count: number,
    private readonly format: PageFormat = {}) {}

  private page(i: number): Page {
    let p = this.pages.get(i)
    if (p) {
      this.cache.touch(p)
      return p
    }
    p = new Page(this, i)
    this.pages.set(i, p)
    const page = p
    const blank = this.format.blank?.(i) ?? Promise.resolve(false)
    p.loading = blank.then((b) => b ? undefined : this.io.read(page.buf, i * PAGE_BYTES).then(() => this.format.loaded?.(i, page.buf))).then(() => {
      // in the same turn as the queued edits: an edit made a turn later, before loading
      // was cleared, was queued after the queue had been applied, and lost
      for (const e of page.edits) e(page.buf)
      page.edits = []
      page.loading = null
    }).finally(() => {
      page.loading = null
      page.edits = []
      this.cache.trim()
    })
    // a failed load forgets the page: the next use reads it again, and edits made meanwhile are
    // lost with it, so an owner learns of it at its next flush (below)
    p.loading.catch(() => {
      if (this.pages.get(i) === page) this.pages.delete(i)
      this.cache.remove(page)
      if (page.dirty) this.failedLoads.push(i)
      this.dirty.delete(page)
    })
    this.cache.add(p)
    return p
  }

  private failedLoads: number[] = []

  /**
   * Page i's bytes, loaded. Read them before the next await: the page may be dropped after.
   * A new page waits for room first, unless roomless (a read made by a page's own load,
   * which room() may be waiting for).
   */
  async read(i: number, roomless = false): Promise<Buffer> {
    if (!roomless && !this.pages.has(i)) await this.cache.room()
    const p = this.page(i)
    if (p.loading) await p.loading
    return p.buf
  }

  /** Page i's bytes if it is in memory and loaded (no I/O), else null. */
  peek(i: number): Buffer | null {
    const p = this.pages.get(i)
    return p && !p.loading ? p.buf : null
  }

  /** Resolves once the cache is within its capacity again (undefined: it is). */
  room(): Promise<void> | undefined {
    return this.cache.room()
  }

  /** Anything to write or being written? */
  get busy(): boolean {
    if (this.dirty.size || this.failedLoads.length) return true
    for (const p of this.pages.values()) if (p.writing) return true
    return false
  }

  /** Apply edit to page i now (or, while it loads, as soon as it has loaded) and mark it dirty. */
  edit(i: number, edit: (buf: Buffer) => void): void {
    const p = this.page(i)
    if (p.loading) p.edits.push(edit); else edit(p.buf)
    p.dirty = true
    this.dirty.add(p)
  }

  /** Write page p if dirty, after any write of it in flight (two writes of one page could land in either order). */
  async writeOut(p: Page): Promise<void> {
    if (this.format.beforeWrite && p.dirty) await this.format.beforeWrite(p.index)
    for (;;) {
      if (p.writing) await p.writing.catch(() => {})
      else if (p.loading) await p.loading.catch(() => {})
      else break
    }
    if (!p.dirty || this.pages.get(p.index) !== p) return
    p.dirty = false
    this.dirty.delete(p)
    // a copy: the page keeps changing while the write is in the kernel
    const out = Buffer.from(p.buf)
    this.format.stamp?.(p.index, out)
    p.writing = this.io.write(out, p.index * PAGE_BYTES)
    try {
      await p.writing
    } catch (e) {
      p.dirty = true
      this.dirty.add(p)
      throw e
    } finally {
      p.writing = null
      this.cache.trim()
    }
  }

  /** Write page i if it is in memory and dirty (or wait for its write in flight). */
  async writeIndex(i: number): Promise<void> {
    const p = this.pages.get(i)
    if (p && (p.dirty || p.writing)) await this.writeOut(p)
  }

  /** Resolves once every edit made before the call is written (not flushed). */
  async flush(): Promise<void> {
    const todo = [...this.dirty]
    for (const p of this.pages.values()) if (p.writing && !p.dirty) todo.push(p)
    // all at once: the device queue sends the writes of a turn together (a page waits for
    // its summary page in writeOut, not here), where one at a time cost a round trip each
    const results = await Promise.allSettled(todo.map((p) => this.writeOut(p)))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
    // after the writes: a page still loading when this began may have failed meanwhile
    const lost = this.failedLoads.splice(0)
    if (lost.length) throw new Error(`metadata pages ${lost.join(', ')} could not be read; changes to them were lost`)
  }

  /** The cache dropped p. */
  forget(p: Page): void {
    if (this.pages.get(p.index) === p) this.pages.delete(p.index)
  }
}
