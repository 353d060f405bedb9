// The bounded page cache under checksum tables: memory stays at its capacity however
// much of a table (dense or tagged) is touched, dirty pages evicted early are written (and persist()
// waits for such writes), persist writes its pages together (each after its summary page), edits made while a page loads land in order, and a table
// read back from disk after any of that holds exactly what was set.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'path'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { openDevice } from '../src/volume/device'
import { FaultDev } from '../src/block/fault'
import { MemDev } from './helpers/fs-memdev'
import { PageCache, PAGE_BYTES } from '../src/volume/pagecache'
import { ChecksumTable, tableBytes, tableGeneration } from '../src/volume/checksum'

/** The promise rejects (with an I/O error from the fault rule). */
async function rejects(p: () => Promise<unknown>): Promise<void> {
  const r = await p().then(() => 'resolved', (e) => e as Error)
  assert.instance(r, Error)
  assert.match((r as Error).message, /injected|could not be read/)
}

const DATA = 256 * MiB
const BLOCKS = DATA / 4096

for (const generation of [undefined, tableGeneration('5a17', 'dev', 0)]) test(`a 3-page cache holds 3 pages while a whole ${generation ? 'tagged' : 'dense'} table is written and read; every sum reads back after a reopen`, async () => {
  const t = await tmpDir()
  try {
    const dev = await openDevice(path.join(t.dir, 't.img'), { create: tableBytes(DATA, !!generation) })
    const cache = new PageCache(3 * PAGE_BYTES)
    const tab = await ChecksumTable.load(dev, DATA, { cache, generation })
    const want = (b: number) => ((b * 2654435761) >>> 0) || 1
    // strided, so each set lands on another page than the last
    for (let k = 0; k < BLOCKS; k += 97) {
      tab.set(k, want(k))
      // as a layout does before it acknowledges the write
      await tab.room()
      assert.ok(cache.residentPages <= 3, `resident ${cache.residentPages}`)
    }
    await tab.persist()
    assert.ok(cache.residentPages <= 3, `resident ${cache.residentPages} after persist`)
    for (let k = 0; k < BLOCKS; k += 97) assert.is(await tab.get(k), want(k), `block ${k}`)
    assert.is(await tab.get(1), 0, 'never set: 0')
    await dev.close()
    const again = await openDevice(path.join(t.dir, 't.img'))
    const fresh = await ChecksumTable.load(again, DATA, { cache: new PageCache(PAGE_BYTES), generation })
    const all = await fresh.getMany(0, BLOCKS)
    for (let k = 0; k < BLOCKS; k++) assert.is(all[k], k % 97 === 0 ? want(k) : 0, `block ${k} after reopen`)
    await again.close()
  } finally {
    await t.cleanup()
  }
})

test('an edit made on any microtask turn while a page loads is kept (one that came as the queued edits were applied was lost)', async () => {
  // a device that answers at once (as a read the host page cache answers does) puts the
  // load's settling a few microtask turns after the set that started it
  const dev = new MemDev(tableBytes(DATA))
  const tab = await ChecksumTable.load(dev, DATA, { cache: new PageCache(3 * PAGE_BYTES) })
  for (let k = 0; k < 12; k++) {
    tab.set(k, k + 100)
    await null
  }
  await tab.persist()
  const fresh = await ChecksumTable.load(dev, DATA, { cache: new PageCache(PAGE_BYTES) })
  assert.equal([...await fresh.getMany(0, 12)], Array.from({ length: 12 }, (_, k) => k + 100))
})

test('edits to a page still loading apply in call order; persist waits for a write-back started by eviction', async () => {
  const t = await tmpDir()
  try {
    const dev = await openDevice(path.join(t.dir, 't.img'), { create: tableBytes(DATA) })
    const slow = new FaultDev(dev, { rules: [{ op: 'any', delayMs: 30, delayOnly: true }] })
    const cache = new PageCache(PAGE_BYTES)
    const tab = await ChecksumTable.load(slow, DATA, { cache })
    tab.set(5, 1)
    tab.set(5, 2)
    tab.setMany(4, Uint32Array.of(7, 3))
    assert.is(await tab.get(5), 3)
    assert.is(await tab.get(4), 7)
    // a set on another page pushes page 0 out: it is dirty, so the cache writes it back first
    tab.set(5000, 9)
    await tab.persist()
    const fresh = await ChecksumTable.load(dev, DATA, { cache: new PageCache(PAGE_BYTES) })
    assert.equal([...await fresh.getMany(4, 2)], [7, 3])
    assert.is(await fresh.get(5000), 9)
    await dev.close()
  } finally {
    await t.cleanup()
  }
})

test('persist writes the dirty sum pages at once, after the summary page that marks them used', async () => {
  const mem = new MemDev(tableBytes(DATA, true))
  const events: string[] = []
  let inFlight = 0, most = 0
  const slow = {
    size: mem.size,
    read: (b: Buffer, o: number) => mem.read(b, o),
    async write(b: Buffer, o: number) {
      events.push(`start ${o / PAGE_BYTES}`)
      most = Math.max(most, ++inFlight)
      await new Promise((r) => setTimeout(r, 5))
      await mem.write(b, o)
      inFlight--
      events.push(`end ${o / PAGE_BYTES}`)
    },
    flush: () => mem.flush(),
    close: () => mem.close(),
  }
  const tab = await ChecksumTable.load(slow, DATA, { cache: new PageCache(64 * PAGE_BYTES), generation: tableGeneration('5a17', 'dev', 0) })
  const PER_PAGE = (PAGE_BYTES - 8) / 4
  for (let p = 0; p < 8; p++) tab.set(p * PER_PAGE + 3, p + 1)
  await tab.persist()
  assert.is(most, 8, `the eight sum pages were written together: ${events.join(', ')}`)
  assert.is(events[0], 'start 0')
  assert.is(events[1], 'end 0', `the summary page first: ${events.join(', ')}`)
  const fresh = await ChecksumTable.load(mem, DATA, { cache: new PageCache(PAGE_BYTES), generation: tableGeneration('5a17', 'dev', 0) })
  for (let p = 0; p < 8; p++) assert.is(await fresh.get(p * PER_PAGE + 3), p + 1)
})

test('a table page that cannot be read fails get and persist, not silently', async () => {
  const t = await tmpDir()
  try {
    const dev = await openDevice(path.join(t.dir, 't.img'), { create: tableBytes(DATA) })
    const bad = new FaultDev(dev, { rules: [{ op: 'read', offset: PAGE_BYTES, length: PAGE_BYTES }] })
    const tab = await ChecksumTable.load(bad, DATA, { cache: new PageCache(4 * PAGE_BYTES) })
    await rejects(() => tab.get(1024))
    tab.set(1025, 4)
    await rejects(() => tab.persist())
    assert.is(await tab.get(0), 0, 'other pages still serve')
    await dev.close()
  } finally {
    await t.cleanup()
  }
})

test.run()
