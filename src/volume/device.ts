// A backing device: a regular (usually sparse) file or a block device, exposed as a
// BlockDev over its WHOLE extent. The label/reserved area and the data area are
// carved out of it by the pool (see label.ts and slice.ts), not here.
//
// Writes go through the page cache and flush() is fdatasync. writeDurable() goes
// through a second descriptor opened O_DSYNC, so making one small write durable (a
// write-intent bit) writes back that range only, not every data write still cached.
import { promises as fsp, constants as fsc } from 'fs'
import { BlockDev, VsmError, checkRange } from '../block/blockdev'

const BLKGETSIZE64 = 0x80081272

export interface OpenDeviceOptions {
  /** If the path does not exist, create a sparse regular file of this many bytes. */
  create?: number
}

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

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    /** The same file opened O_DSYNC: each write returns once its own range is durable. */
    private readonly dsync: fsp.FileHandle,
    readonly size: number,
    readonly isBlockDevice: boolean,
  ) {}

  static async open(path: string, opts: OpenDeviceOptions = {}): Promise<Device> {
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
      return new Device(path, fh, dsync, blk ? blockDeviceSize(fh.fd, path) : st.size, blk)
    } catch (e) {
      await dsync?.close().catch(() => {})
      await fh.close().catch(() => {})
      throw e
    }
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    if (offset > this.size) checkRange(this, offset, buf.length)
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

  write(buf: Buffer, offset: number): Promise<void> {
    return this.writeAll(this.fh, buf, offset)
  }

  writeDurable(buf: Buffer, offset: number): Promise<void> {
    return this.writeAll(this.dsync, buf, offset)
  }

  private async writeAll(fh: fsp.FileHandle, buf: Buffer, offset: number): Promise<void> {
    checkRange(this, offset, buf.length)
    let done = 0
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, offset + done)
      if (bytesWritten <= 0) throw new VsmError('EIO', `short write on ${this.path} at ${offset + done}`)
      done += bytesWritten
    }
  }

  flush(): Promise<void> {
    return this.fh.datasync()
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try { await this.dsync.close() } finally { await this.fh.close() }
  }
}

export function openDevice(path: string, opts?: OpenDeviceOptions): Promise<Device> {
  return Device.open(path, opts)
}
