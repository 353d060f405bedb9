// What the fs suites share: a fresh fs on in-memory volumes, volumes that die at a
// chosen write, and the check that must come out clean with nothing leaked.
import * as assert from 'uvu/assert'
import { FileSystem } from '../../src/fs'
import { BlockDev, VsmError } from '../../src/block/blockdev'
import { MemDev } from './fs-memdev'

export const MiB = 1 << 20

export async function memFs(size = 64 * MiB, n = 1) {
  const vols = Array.from({ length: n }, () => new MemDev(size))
  await FileSystem.mkfs(vols)
  return { vols, fs: await FileSystem.mount(vols) }
}

export async function okCheck(fs: FileSystem) {
  const c = await fs.check()
  assert.ok(c.ok, c.errors.join('; '))
  assert.is(c.leakedBytes, 0)
}

/** The volumes die together after `limit` writes between them (one process, one crash). */
export function dying(devs: MemDev[], limit: number): BlockDev[] {
  let writes = 0
  return devs.map((d) => ({
    size: d.size,
    read: (b: Buffer, o: number) => d.read(b, o),
    write: async (b: Buffer, o: number) => { if (writes++ >= limit) throw new VsmError('EIO', 'injected: process died'); return d.write(b, o) },
    flush: () => d.flush(),
    close: () => d.close(),
  }))
}
