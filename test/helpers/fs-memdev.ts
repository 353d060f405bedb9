// An in-memory BlockDev that models a volatile write cache: writes are visible at
// once but only durable after flush(). crashImage() builds what a power loss could
// leave behind: the durable image plus a random subset of the unflushed writes,
// some of them torn at a 512-byte sector boundary.
import { BlockDev, checkRange } from '../../src/block/blockdev'

const PAGE = 4096

export class MemDev implements BlockDev {
  private cur = new Map<number, Buffer>()
  private durable = new Map<number, Buffer>()
  private unflushed: { off: number; data: Buffer }[] = []
  closed = false

  constructor(readonly size: number) {}

  private static put(pages: Map<number, Buffer>, data: Buffer, off: number) {
    let done = 0
    while (done < data.length) {
      const pos = off + done
      const pi = Math.floor(pos / PAGE), po = pos % PAGE
      const n = Math.min(PAGE - po, data.length - done)
      let p = pages.get(pi)
      if (!p) { p = Buffer.alloc(PAGE); pages.set(pi, p) }
      data.copy(p, po, done, done + n)
      done += n
    }
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    checkRange(this, offset, buf.length)
    let done = 0
    while (done < buf.length) {
      const pos = offset + done
      const pi = Math.floor(pos / PAGE), po = pos % PAGE
      const n = Math.min(PAGE - po, buf.length - done)
      const p = this.cur.get(pi)
      if (p) p.copy(buf, done, po, po + n)
      else buf.fill(0, done, done + n)
      done += n
    }
    await Promise.resolve()
    return buf.length
  }

  async write(buf: Buffer, offset: number): Promise<void> {
    checkRange(this, offset, buf.length)
    const data = Buffer.from(buf)
    MemDev.put(this.cur, data, offset)
    this.unflushed.push({ off: offset, data })
    await Promise.resolve()
  }

  /** Reads as zeros at once; like a write, durable only after flush() (a crash may lose it). */
  discard(offset: number, length: number): Promise<void> {
    return this.write(Buffer.alloc(length), offset)
  }

  async flush(): Promise<void> {
    for (const w of this.unflushed) MemDev.put(this.durable, w.data, w.off)
    this.unflushed = []
    await Promise.resolve()
  }

  async close() { this.closed = true }

  /** The image a crash right now could leave; r(n) returns 0..n-1. */
  crashImage(r: (n: number) => number): MemDev {
    const img = new MemDev(this.size)
    for (const [k, v] of this.durable) img.durable.set(k, Buffer.from(v))
    for (const w of this.unflushed) {
      const c = r(4)
      if (c === 0) continue // lost
      let data = w.data
      if (c === 1 && data.length > 512) data = data.subarray(0, 512 * (1 + r(Math.floor(data.length / 512)))) // torn
      MemDev.put(img.durable, data, w.off)
    }
    for (const [k, v] of img.durable) img.cur.set(k, Buffer.from(v))
    return img
  }

  /** Everything written so far, as one buffer, taken at once (no await: nothing can change it meanwhile). */
  contents(): Buffer {
    const b = Buffer.alloc(this.size)
    for (const [k, v] of this.cur) v.copy(b, k * PAGE, 0, Math.min(PAGE, this.size - k * PAGE))
    return b
  }

  /** Everything written so far, as if it had all reached the medium. */
  allWritten(): MemDev {
    const img = new MemDev(this.size)
    for (const [k, v] of this.cur) { img.cur.set(k, Buffer.from(v)); img.durable.set(k, Buffer.from(v)) }
    return img
  }
}

/** The power cut a CrashDev simulates. */
export class Crash extends Error {}

/** Throws at the n-th write or flush once armed, and at everything after (the power is gone). */
export class CrashDev implements BlockDev {
  private left = -1
  dead = false
  constructor(readonly mem: MemDev) {}
  get size() { return this.mem.size }
  arm(n: number) { this.left = n }
  private tick() {
    if (this.dead) throw new Crash('crashed')
    if (this.left > 0 && --this.left === 0) { this.dead = true; throw new Crash('crashed') }
  }
  read(buf: Buffer, off: number) { if (this.dead) throw new Crash('crashed'); return this.mem.read(buf, off) }
  async write(buf: Buffer, off: number) { this.tick(); await this.mem.write(buf, off) }
  async flush() { this.tick(); await this.mem.flush() }
  async close() { /* nothing */ }
}
