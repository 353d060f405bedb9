// A backing device: a regular (usually sparse) file or a block device, exposed as a
// BlockDev over its WHOLE extent. The label/reserved area and the data area are
// carved out of it by the pool (see label.ts and slice.ts), not here.
//
// Writes go through the page cache, plugged per turn of the event loop into jobs of the
// write threads (native/sys.cc) shared with the pool's other devices (write-queue.ts), and flush() is fdatasync, queued behind them. writeDurable() goes
// through a second descriptor opened O_DSYNC, so making one small write durable (a
// write-intent bit) writes back that range only, not every data write still cached.
//
// A device that stops answering (a dead disk, a hung network or FUSE backing) must not
// stop the daemon: each system call ties up a thread (libuv's, or a write thread) until the kernel
// returns, so at most MAX_IN_FLIGHT calls and the write queue's jobs run at once per device (the rest wait here, not in
// the thread pool), and an operation older than the pool's timeout, or abandon() by the
// operator, fails everything in flight and everything after with EIO at once, as the
// kernel's SCSI layer offlines a device that times out. The calls already in the kernel
// stay there until it answers; their results are ignored.
import { promises as fsp, constants as fsc } from 'fs'
import { BlockDev, VsmError, WriteAck, rejectBadRange, strand } from '../block/blockdev'
import { NEVER_NOWAIT, discardRange, readNowait } from '../native/sys'
import { WritePlug, WriteQueue } from './write-queue'

const BLKGETSIZE64 = 0x80081272

export interface OpenDeviceOptions {
  /** If the path does not exist, create a sparse regular file of this many bytes. */
  create?: number
  /** An operation not answered in this many ms abandons the device (0 or absent: wait forever). */
  timeoutMs?: number
  /** Shared with the pool's other devices, so the writes of one turn go to the write threads together (absent: its own). */
  plug?: WritePlug
}

/** System calls one device may have in libuv's thread pool at once (bin/vsm sizes the pool at 16). */
const MAX_IN_FLIGHT = 4

/** kind and offset, not a message: the message is only made for one that times out. */
interface Op { kind: string; offset: number; since: number; reject: (e: unknown) => void }

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code
}

/** Size of a block device; the kernel is the only authority (stat reports 0). */
function blockDeviceSize(fd: number, path: string): number {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const ioctl = require('ioctl') as (fd: number, req: number, buf: Buffer) => number
  const out = Buffer.alloc(8)
  try {
    ioctl(fd, BLKGETSIZE64, out)
  } catch (e) {
    throw new VsmError('EIO', `BLKGETSIZE64 failed on ${path}: ${(e as Error).message}`)
  }
  return Number(out.readBigUInt64LE(0))
}

export class Device implements BlockDev {
  private closed = false
  /** Why the device was abandoned: every operation fails with it from then on. */
  private dead: VsmError | null = null
  /** Operations handed to the kernel, oldest first. */
  private readonly running = new Set<Op>()
  /** Running operations that hold a thread of libuv's pool each (not the write queue's, which go to the write threads). */
  private pooled = 0
  private readonly waiting: (() => void)[] = []
  private readonly queue: WriteQueue
  private watchdog: NodeJS.Timeout | null = null
  /** Reads try the page cache first (readNowait); off for files that cannot (FUSE). */
  private nowait = true

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    /** The same file opened O_DSYNC: each write returns once its own range is durable. */
    private readonly dsync: fsp.FileHandle,
    readonly size: number,
    readonly isBlockDevice: boolean,
    timeoutMs = 0,
    plug?: WritePlug,
  ) {
    this.queue = new WriteQueue(fh.fd, path, plug)
    if (timeoutMs > 0) {
      this.watchdog = setInterval(() => this.check(timeoutMs), Math.max(100, timeoutMs / 4))
      this.watchdog.unref()
    }
  }

  /** Set once the device has been abandoned (timed out, or taken away by the operator): it must be reopened. */
  get abandoned(): VsmError | null { return this.dead }

  /**
   * Fail every operation in flight and every later one with EIO (reason): for a device
   * that no longer answers. What is still in the kernel is left to finish or not.
   */
  abandon(reason: string): void {
    if (this.dead) return
    this.dead = new VsmError('EIO', `device ${this.path} abandoned: ${reason}`)
    if (this.watchdog) clearInterval(this.watchdog)
    this.queue.abandon(this.dead)
    strand(this.running.size)
    for (const op of this.running) op.reject(this.dead)
    this.running.clear()
    this.pooled = 0
    for (const start of this.waiting.splice(0)) start()
  }

  private check(timeoutMs: number): void {
    const oldest = this.running.values().next().value
    if (oldest && Date.now() - oldest.since > timeoutMs) {
      this.abandon(`${oldest.kind}${oldest.kind === 'flush' ? '' : ` at ${oldest.offset}`} not answered in ${Math.round(timeoutMs / 1000)} s`)
    }
  }

  /** Runs one operation under the watchdog, and under the in-flight cap unless it is queued (the write queue caps its jobs). */
  private op<T>(kind: string, offset: number, call: () => Promise<T>, queued = false): Promise<T> {
    if (this.dead) return Promise.reject(this.dead)
    return new Promise<T>((resolve, reject) => {
      const start = () => {
        if (this.dead) { reject(this.dead); return }
        const op: Op = { kind, offset, since: Date.now(), reject }
        this.running.add(op)
        if (!queued) this.pooled++
        const done = () => {
          // false once abandoned: the caller has had its error, and nothing waits
          if (!this.running.delete(op)) return false
          if (!queued) { this.pooled--; this.waiting.shift()?.() }
          return true
        }
        // a call that throws at once (not a rejection) must not stay counted as running
        let p: Promise<T>
        try { p = call() } catch (e) { p = Promise.reject(e) }
        p.then((v) => { if (done()) resolve(v) }, (e) => { if (done()) reject(e) })
      }
      if (queued || this.pooled < MAX_IN_FLIGHT) start()
      else this.waiting.push(start)
    })
  }

  /** Opens path; with a timeout, an open the kernel leaves unanswered fails, and what it opens later is closed. */
  static open(path: string, opts: OpenDeviceOptions = {}): Promise<Device> {
    const opening = Device.openNow(path, opts)
    const ms = opts.timeoutMs ?? 0
    if (!ms) return opening
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new VsmError('EIO', `cannot open device ${path}: not answered in ${Math.round(ms / 1000)} s`))
        opening.then((d) => { d.abandon('its open timed out'); return d.close() }).catch(() => {})
      }, ms)
      opening.then((d) => { clearTimeout(timer); resolve(d) }, (e) => { clearTimeout(timer); reject(e) })
    })
  }

  private static async openNow(path: string, opts: OpenDeviceOptions): Promise<Device> {
    let fh: fsp.FileHandle | undefined
    try {
      fh = await fsp.open(path, fsc.O_RDWR)
    } catch (e) {
      if (errCode(e) !== 'ENOENT' || opts.create === undefined) {
        throw new VsmError(errCode(e) ?? 'EIO', `cannot open device ${path}: ${(e as Error).message}`)
      }
      const size = opts.create
      if (!Number.isSafeInteger(size) || size <= 0) throw new VsmError('EINVAL', `bad device size ${size}`)
      try {
        // O_EXCL: never clobber a file another process created between the two opens
        fh = await fsp.open(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600)
        await fh.truncate(size)
      } catch (e2) {
        await fh?.close().catch(() => {})
        throw new VsmError(errCode(e2) ?? 'EIO', `cannot create device file ${path}: ${(e2 as Error).message}`)
      }
    }
    let dsync: fsp.FileHandle | undefined
    try {
      const st = await fh.stat()
      const blk = st.isBlockDevice()
      if (!blk && !st.isFile()) throw new VsmError('EINVAL', `${path} is neither a regular file nor a block device`)
      // through /proc: the very file fh has open, even if the path has changed since
      dsync = await fsp.open(`/proc/self/fd/${fh.fd}`, fsc.O_RDWR | fsc.O_DSYNC)
      return new Device(path, fh, dsync, blk ? blockDeviceSize(fh.fd, path) : st.size, blk, opts.timeoutMs, opts.plug)
    } catch (e) {
      await dsync?.close().catch(() => {})
      await fh.close().catch(() => {})
      throw e
    }
  }

  read(buf: Buffer, offset: number): Promise<number> {
    if (offset > this.size) return rejectBadRange(this, offset, buf.length)!
    if (this.nowait && !this.dead) {
      // what the page cache holds comes at once: a thread pool hop cost the main thread
      // ~11 us a read here; a read that would wait on the device still goes the usual
      // way, under the in-flight cap and the watchdog
      const want = Math.min(buf.length, this.size - offset)
      const n = want === buf.length ? readNowait(this.fh.fd, buf, offset) : readNowait(this.fh.fd, buf.subarray(0, want), offset)
      if (n === want) return Promise.resolve(want)
      if (n === NEVER_NOWAIT) this.nowait = false
    }
    return this.op('read', offset, () => this.readAll(buf, offset))
  }

  private async readAll(buf: Buffer, offset: number): Promise<number> {
    const want = Math.min(buf.length, this.size - offset)
    let done = 0
    while (done < want) {
      const { bytesRead } = await this.fh.read(buf, done, want - done, offset + done)
      // the file was cut short under us (its size is checked at open): the device is going away
      if (bytesRead === 0) throw new VsmError('EIO', `short read on ${this.path} at ${offset + done}: ${want - done} bytes missing`)
      done += bytesRead
    }
    return want
  }

  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> {
    const bad = rejectBadRange(this, offset, buf.length)
    if (bad) return bad
    return this.op('write', offset, () => this.queue.write(buf, offset, ack), true)
  }

  writeDurable(buf: Buffer, offset: number): Promise<void> {
    const bad = rejectBadRange(this, offset, buf.length)
    if (bad) return bad
    return this.op('write', offset, () => this.writeAll(this.dsync, buf, offset))
  }

  private async writeAll(fh: fsp.FileHandle, buf: Buffer, offset: number): Promise<void> {
    let done = 0
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done)
      if (bytesWritten <= 0) throw new VsmError('EIO', `short write on ${this.path} at ${offset + done}`)
      done += bytesWritten
    }
  }

  /** The range reads as zeros after; a file gets a hole (a thin backing file shrinks). */
  discard(offset: number, length: number): Promise<void> {
    const bad = rejectBadRange(this, offset, length)
    if (bad) return bad
    return this.op('discard', offset, () => discardRange(this.fh.fd, offset, length, this.isBlockDevice))
  }

  flush(): Promise<void> {
    return this.op('flush', 0, () => this.queue.sync(), true)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.watchdog) clearInterval(this.watchdog)
    // the queue's jobs write through fh's raw descriptor: closed under them, its number
    // could be reused by the next open and their writes land in another file
    const closing = (async () => { await this.queue.idle(); try { await this.fh.close() } finally { await this.dsync.close() } })()
    // close(2) of a file on a hung FUSE or network backing waits for it too: not the caller
    if (this.dead) closing.catch(() => {})
    else await closing
  }
}

export function openDevice(path: string, opts?: OpenDeviceOptions): Promise<Device> {
  return Device.open(path, opts)
}
