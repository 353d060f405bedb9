// An archive tier as the fs sees it: an append-only address space of 4 KiB blocks
// outside the pool, where the fs keeps the ranges it migrated there. Addresses are
// handed out in whole objects of OBJECT_BLOCKS (1 MiB) and never again, so an object,
// once the fs points at it, is never overwritten; address a lives in object
// floor(a / OBJECT_BLOCKS). Every call is bounded by a timeout: an archive that does not
// answer gives EIO (reported through `onError`), and the next call tries again.
import { VsmError } from '../block/blockdev'
import type { ArchiveStore } from './archive'

export const OBJECT_BLOCKS = 256
const BS = 4096
const OBJECT_BYTES = OBJECT_BLOCKS * BS

export const objectKey = (n: number) => `o${n.toString(16).padStart(10, '0')}`
export const objectOfKey = (k: string): number | null => /^o[0-9a-f]{10}$/.test(k) ? parseInt(k.slice(1), 16) : null

export class ArchiveDev {
  /** An address space far larger than any pool: the fs never maps past a file's size anyway. */
  readonly size = 2 ** 52
  private next = 0

  constructor(
    readonly name: string,
    readonly store: ArchiveStore,
    private timeoutMs: number,
    private onError: (what: string, e: Error) => void = () => {},
  ) {}

  /** Addresses below `block` may be in use (the fs's maps, premigrated copies): never hand them out. */
  reserveBelow(block: number): void {
    this.next = Math.max(this.next, Math.ceil(block / OBJECT_BLOCKS))
  }

  /** The next object number `alloc` would hand out. */
  nextObject(): number { return this.next }

  /** The first block of fresh objects enough for `blocks` blocks. */
  alloc(blocks: number): number {
    const first = this.next
    this.next += Math.max(1, Math.ceil(blocks / OBJECT_BLOCKS))
    return first * OBJECT_BLOCKS
  }

  private timed<T>(what: string, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout
    const t = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new VsmError('EIO', `archive ${this.name}: ${what} did not finish within ${this.timeoutMs} ms`)), this.timeoutMs)
    })
    return Promise.race([p, t]).catch((e: Error) => {
      this.onError(what, e)
      throw e instanceof VsmError && e.code === 'EIO' ? e : new VsmError('EIO', `archive ${this.name}: ${what}: ${e.message}`)
    }).finally(() => clearTimeout(timer))
  }

  /** Reads [pos, pos+buf.length) of the address space, object by object. */
  async read(buf: Buffer, pos: number): Promise<number> {
    const parts: Promise<void>[] = []
    for (let at = 0; at < buf.length;) {
      const obj = Math.floor((pos + at) / OBJECT_BYTES)
      const off = pos + at - obj * OBJECT_BYTES
      const n = Math.min(buf.length - at, OBJECT_BYTES - off)
      const into = at
      parts.push(this.timed(`reading ${objectKey(obj)}`, this.store.get(objectKey(obj), off, n)).then((b) => { b.copy(buf, into) }))
      at += n
    }
    await Promise.all(parts)
    return buf.length
  }

  /**
   * Writes whole objects from `pos` (an address `alloc` returned), each durable before
   * this resolves: the fs records the new location only after that.
   */
  async write(buf: Buffer, pos: number): Promise<void> {
    if (pos % OBJECT_BYTES) throw new VsmError('EINVAL', `archive ${this.name}: a write must start an object (at ${pos})`)
    const parts: Promise<void>[] = []
    for (let at = 0; at < buf.length; at += OBJECT_BYTES) {
      const obj = (pos + at) / OBJECT_BYTES
      parts.push(this.timed(`writing ${objectKey(obj)}`, this.store.put(objectKey(obj), buf.subarray(at, at + OBJECT_BYTES))))
    }
    await Promise.all(parts)
  }

  async flush(): Promise<void> { /* every write is durable when it resolves */ }

  close(): Promise<void> { return this.store.close() }
}
