// What the fs suites share: a fresh fs on in-memory volumes, and the check that must
// come out clean with nothing leaked.
import * as assert from 'uvu/assert'
import { FileSystem } from '../../src/fs'
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
