// The fs with an archive location (src/fs: locate, relocate; src/hsm/archive-dev.ts over a
// directory archive): migration out of the pool frees the pool blocks of the file and of
// a snapshot sharing them; a read recalls the range it reads plus a little read-ahead,
// not the file; a write recalls only the blocks it changes in part; a snapshot reads its
// archived blocks where they lie; the locations survive a remount; an archive that does
// not answer gives EIO after its timeout, and the next read succeeds once it answers.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { FileSystem } from '../src/fs'
import { ARCHIVE_BASE } from '../src/fs/layout'
import { openArchive, type ArchiveStore } from '../src/hsm/archive'
import { ArchiveDev, OBJECT_BLOCKS } from '../src/hsm/archive-dev'
import { memFs, MiB, okCheck } from './helpers/fs-fixture'

const BS = 4096
const dir = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-archfs-`))
test.after(() => rmSync(dir, { recursive: true, force: true }))

/** The directory archive, counting what is read from it; `hang` makes it stop answering. */
class Watched implements ArchiveStore {
  gets = 0
  bytesRead = 0
  hang = false
  constructor(private inner: ArchiveStore) {}
  put(k: string, d: Buffer) { return this.inner.put(k, d) }
  async get(k: string, off: number, len: number) {
    if (this.hang) return new Promise<Buffer>(() => {})
    this.gets++
    this.bytesRead += len
    return this.inner.get(k, off, len)
  }
  delete(k: string) { return this.inner.delete(k) }
  list() { return this.inner.list() }
  probe() { return this.inner.probe() }
  close() { return this.inner.close() }
}

let n = 0
function archive(timeoutMs = 10_000) {
  const d = join(dir, `a${n++}`)
  mkdirSync(d)
  const store = new Watched(openArchive({ archive: d }))
  const errors: string[] = []
  const dev = new ArchiveDev('archive:cold', store, timeoutMs, (what, e) => errors.push(`${what}: ${e.message}`))
  return { d, store, dev, errors }
}

async function fileWith(fs: FileSystem, path: string, data: Buffer): Promise<number> {
  const ino = await fs.create(path, 0o644, 0, 0)
  await fs.write(ino, data, 0)
  await fs.fsync(ino)
  return ino
}

async function readAll(fs: FileSystem, ino: number, size: number): Promise<Buffer> {
  const b = Buffer.alloc(size)
  await fs.read(ino, b, 0)
  return b
}

/** Migrates all of `ino` to the archive location in 1 MiB steps, as the HSM's job does. */
async function migrate(fs: FileSystem, ino: number, vol: number) {
  for (let b = 0; b < fs.blockSpan(ino); b += OBJECT_BLOCKS) await fs.relocate(ino, b, b + OBJECT_BLOCKS, vol)
  await fs.sync()
}

const freeBytes = (fs: FileSystem) => fs.volumeSpace()[0].free

test('migration to an archive frees the pool blocks of the file and of its snapshot; every byte reads back', async () => {
  const { fs } = await memFs(64 * MiB)
  const a = archive()
  const vol = fs.attachArchive(0, a.dev)
  assert.is(vol, ARCHIVE_BASE)
  const data = randomBytes(4 * MiB + 5000)
  const ino = await fileWith(fs, '/d.img', data)
  await fs.snapshot('/d.img', 's1')
  const before = freeBytes(fs)
  await migrate(fs, ino, vol)
  const blocks = Math.ceil(data.length / BS)
  assert.is(freeBytes(fs) - before, blocks * BS, 'the pool got back every block, the snapshot\'s shared ones too')
  assert.equal(fs.placementOf(ino), { 'archive:cold': blocks * BS })
  assert.equal(fs.placementOf(fs.snapshotIno('/d.img', 's1')), { 'archive:cold': blocks * BS })
  assert.equal(fs.archivedRuns(vol).reduce((s, r) => s + r.len, 0), blocks)
  assert.is(readdirSync(a.d).length, 5, 'one object per MiB')
  const snap = fs.openSnapshot('/d.img', 's1')
  const sb = Buffer.alloc(data.length)
  await snap.read(sb, 0)
  assert.ok(sb.equals(data), 'the snapshot reads from the archive')
  assert.equal(fs.placementOf(fs.snapshotIno('/d.img', 's1')), { 'archive:cold': blocks * BS }, 'a snapshot read recalls nothing')
  await okCheck(fs)
  await fs.close()
})

test('a read recalls what it reads plus read-ahead, not the file; a write recalls only what it changes in part', async () => {
  const { fs } = await memFs(64 * MiB)
  const a = archive()
  const vol = fs.attachArchive(0, a.dev)
  const data = randomBytes(8 * MiB)
  const ino = await fileWith(fs, '/d.img', data)
  await migrate(fs, ino, vol)
  // a 4 KiB read in the middle of the file
  const at = 5 * MiB + 3 * BS
  const b = Buffer.alloc(BS)
  await fs.read(ino, b, at)
  assert.ok(b.equals(data.subarray(at, at + BS)))
  const home = fs.placementOf(ino).vol0 ?? 0
  assert.ok(home >= BS && home <= 256 * 1024, `recalled ${home} bytes for a 4 KiB read`)
  assert.is(a.store.bytesRead, home, 'fetched from the archive exactly what came home')
  // a write covering whole archived blocks fetches nothing; one changing a block in part fetches that block
  a.store.bytesRead = 0
  const whole = randomBytes(2 * BS)
  await fs.write(ino, whole, 2 * MiB)
  assert.is(a.store.bytesRead, 0, 'whole blocks are not fetched')
  const part = randomBytes(100)
  await fs.write(ino, part, 3 * MiB + 10)
  assert.is(a.store.bytesRead, BS, 'only the block changed in part is fetched')
  whole.copy(data, 2 * MiB)
  part.copy(data, 3 * MiB + 10)
  assert.is(fs.placementOf(ino).vol0, home + 3 * BS)
  await fs.fsync(ino)
  assert.ok((await readAll(fs, ino, data.length)).equals(data))
  assert.equal(fs.placementOf(ino), { vol0: data.length }, 'a full read brought it all home')
  await okCheck(fs)
  await fs.close()
})

test('archived locations survive a remount; unattached they read as EIO, attached as the data', async () => {
  const { fs, vols } = await memFs(64 * MiB)
  const a = archive()
  const vol = fs.attachArchive(0, a.dev)
  const data = randomBytes(2 * MiB)
  const ino = await fileWith(fs, '/d.img', data)
  await migrate(fs, ino, vol)
  await fs.close()
  const fs2 = await FileSystem.mount(vols)
  try {
    await okCheck(fs2)
    const b = Buffer.alloc(BS)
    try { await fs2.read(ino, b, 0); assert.unreachable('read an archived range with no archive attached') } catch (e) {
      assert.is((e as { code?: string }).code, 'EIO', (e as Error).message)
    }
    fs2.attachArchive(0, new ArchiveDev('archive:cold', openArchive({ archive: a.d }), 10_000))
    assert.ok((await readAll(fs2, ino, data.length)).equals(data))
    await okCheck(fs2)
  } finally { await fs2.close() }
})

test('an archive that does not answer: EIO after the timeout, reported; the next read works once it answers', async () => {
  const { fs } = await memFs(64 * MiB)
  const a = archive(300)
  const vol = fs.attachArchive(0, a.dev)
  const data = randomBytes(MiB)
  const ino = await fileWith(fs, '/d.img', data)
  await migrate(fs, ino, vol)
  const before = freeBytes(fs)
  a.store.hang = true
  const b = Buffer.alloc(BS)
  try { await fs.read(ino, b, 0); assert.unreachable('read succeeded from a hung archive') } catch (e) {
    assert.is((e as { code?: string }).code, 'EIO')
    assert.match((e as Error).message, /did not finish within 300 ms/)
  }
  assert.is(a.errors.length, 1)
  assert.is(freeBytes(fs), before, 'the failed recall gave its pool blocks back')
  assert.equal(fs.placementOf(ino), { 'archive:cold': MiB })
  a.store.hang = false
  await fs.read(ino, b, 0)
  assert.ok(b.equals(data.subarray(0, BS)))
  await okCheck(fs)
  await fs.close()
})

test.run()
