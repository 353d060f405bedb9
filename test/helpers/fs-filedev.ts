// A tiny file-backed BlockDev for fs tests: a sparse temp file, flush = fdatasync.
import { promises as fsp } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { BlockDev, VsmError, checkRange } from '../../src/block/blockdev'

export class FileDev implements BlockDev {
  private constructor(private fh: fsp.FileHandle, readonly size: number, readonly path: string) {}

  static async create(file: string, size: number): Promise<FileDev> {
    const fh = await fsp.open(file, 'w+')
    await fh.truncate(size)
    return new FileDev(fh, size, file)
  }

  static async open(file: string): Promise<FileDev> {
    const fh = await fsp.open(file, 'r+')
    const st = await fh.stat()
    return new FileDev(fh, st.size, file)
  }

  async read(buf: Buffer, offset: number): Promise<number> {
    checkRange(this, offset, buf.length)
    let done = 0
    while (done < buf.length) {
      const { bytesRead } = await this.fh.read(buf, done, buf.length - done, offset + done)
      if (bytesRead === 0) { buf.fill(0, done); break }
      done += bytesRead
    }
    return buf.length
  }

  async write(buf: Buffer, offset: number): Promise<void> {
    checkRange(this, offset, buf.length)
    let done = 0
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, offset + done)
      if (bytesWritten <= 0) throw new VsmError('EIO', 'short write')
      done += bytesWritten
    }
  }

  flush() { return this.fh.datasync() }
  close() { return this.fh.close() }
}

/** A temp directory removed by cleanup(). */
export async function tempDir(prefix = 'vsm-fs-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix))
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) }
}
