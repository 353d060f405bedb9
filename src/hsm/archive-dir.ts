// The directory backend of an archive tier (a local disk or an NFS mount outside the
// pool): an object is written to a temporary name, fsynced, renamed over its name, and
// the directory fsynced, so it is whole and durable or absent.
import { randomBytes } from 'crypto'
import { promises as fsp, constants } from 'fs'
import { join } from 'path'
import { VsmError } from '../block/blockdev'
import type { ArchiveBackend } from './archive'

export const TMP_PREFIX = '.tmp-'

function ioError(e: unknown, what: string): Error {
  const code = (e as NodeJS.ErrnoException).code
  return new VsmError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `${what}: ${(e as Error).message}`)
}

export class DirBackend implements ArchiveBackend {
  constructor(private dir: string) {}

  /** The directory must exist and be writable: an archive is never created by accident. */
  async probe(): Promise<void> {
    try {
      if (!(await fsp.stat(this.dir)).isDirectory()) throw new VsmError('ENOTDIR', `archive ${this.dir} is not a directory`)
      await fsp.access(this.dir, constants.W_OK | constants.R_OK)
    } catch (e) {
      if (e instanceof VsmError) throw e
      throw ioError(e, `archive directory ${this.dir}`)
    }
  }

  async write(name: string, data: Buffer): Promise<void> {
    const tmp = join(this.dir, `${TMP_PREFIX}${name}-${randomBytes(6).toString('hex')}`)
    try {
      const f = await fsp.open(tmp, 'wx', 0o600)
      try {
        await f.writeFile(data)
        await f.sync()
      } finally { await f.close() }
      await fsp.rename(tmp, join(this.dir, name))
      const d = await fsp.open(this.dir, 'r')
      try { await d.sync() } finally { await d.close() }
    } catch (e) {
      await fsp.rm(tmp, { force: true })
      throw ioError(e, `writing archive object ${name} in ${this.dir}`)
    }
  }

  async read(name: string, pos: number, len: number): Promise<Buffer> {
    let f: fsp.FileHandle
    try { f = await fsp.open(join(this.dir, name), 'r') } catch (e) { throw ioError(e, `archive object ${name} in ${this.dir}`) }
    try {
      const buf = Buffer.allocUnsafe(len)
      let got = 0
      while (got < len) {
        const { bytesRead } = await f.read(buf, got, len - got, pos + got)
        if (!bytesRead) break
        got += bytesRead
      }
      return buf.subarray(0, got)
    } catch (e) {
      throw ioError(e, `reading archive object ${name} in ${this.dir}`)
    } finally { await f.close() }
  }

  async remove(name: string): Promise<void> {
    try { await fsp.rm(join(this.dir, name), { force: true }) } catch (e) { throw ioError(e, `removing archive object ${name} in ${this.dir}`) }
  }

  async list(): Promise<string[]> {
    try { return (await fsp.readdir(this.dir)).filter((n) => !n.startsWith(TMP_PREFIX)) } catch (e) { throw ioError(e, `listing archive ${this.dir}`) }
  }

  async close(): Promise<void> { /* nothing held between calls */ }
}
