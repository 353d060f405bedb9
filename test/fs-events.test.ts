// The fs reports to its event sink a write refused for lack of space (ENOSPC), naming
// the volume and what was missing, at most once per interval however often a guest
// retries; a volume added online; and a commit that failed, after which the fs serves
// nothing until a restart (before, nothing said so: every call failed with EIO).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { VsmError } from '../src/block/blockdev'
import { Events, VsmEvent } from '../src/control/events'
import { memFs, MiB } from './helpers/fs-fixture'
import { MemDev } from './helpers/fs-memdev'
import { FaultDev } from '../src/block/fault'
import { FileSystem } from '../src/fs'

/** A 16 MiB fs whose events are collected in `got`. */
async function fsWithEvents() {
  const { fs } = await memFs(16 * MiB)
  const events = new Events()
  const got: VsmEvent[] = []
  events.subscribe((e) => got.push(e))
  fs.useEvents(events)
  return { fs, got }
}

test('ENOSPC on a write is one warning event with the volume, needed and free bytes; retries are counted, not repeated', async () => {
  const { fs, got } = await fsWithEvents()
  try {
    const ino = await fs.create('/full', 0o644, 0, 0)
    let off = 0
    for (;;) {
      try { await fs.write(ino, Buffer.alloc(MiB, 1), off); off += MiB } catch (e) { assert.is((e as VsmError).code, 'ENOSPC'); break }
    }
    assert.is(got.length, 1)
    const [e] = got
    assert.equal([e.event, e.level], ['fs.enospc', 'warn'])
    const d = e.data as any
    assert.equal([d.ino, d.volume, d.neededBytes, d.unreportedRefusals], [ino, 'vol0', MiB, 0])
    assert.ok(d.freeBytes < MiB, JSON.stringify(d))
    for (let i = 0; i < 5; i++) await fs.write(ino, Buffer.alloc(MiB, 2), off).catch(() => undefined)
    assert.is(got.length, 1, 'a retrying writer floods the log')
  } finally {
    await fs.close()
  }
})

test('adding a volume to the mounted fs is an event naming it', async () => {
  const { fs, got } = await fsWithEvents()
  try {
    await fs.addVolume(new MemDev(8 * MiB), 'fast')
    assert.equal(got.map((e) => [e.event, e.level, e.data]), [['fs.volume-added', 'info', { volume: 'fast', size: 8 * MiB, index: 1 }]])
  } finally {
    await fs.close()
  }
})

test('a commit that fails is an error event saying the fs serves nothing until a restart, which it then does', async () => {
  const dev = new MemDev(16 * MiB)
  await FileSystem.mkfs([dev])
  const faulty = new FaultDev(dev)
  const fs = await FileSystem.mount([faulty])
  const events = new Events()
  const got: VsmEvent[] = []
  events.subscribe((e) => got.push(e))
  fs.useEvents(events)
  await fs.create('/a', 0o644, 0, 0)
  faulty.setRules([{ op: 'write' }])
  await fs.sync().catch(() => undefined)
  assert.equal(got.map((e) => [e.event, e.level]), [['fs.broken', 'error']])
  assert.match((got[0].data as any).reason, /commit failed: .*injected/)
  assert.match((got[0].data as any).fix, /restart vsm/)
  assert.is(fs.brokenBy !== null, true)
  faulty.setRules([])
  await fs.close().catch(() => undefined)
  const again = await FileSystem.mount([dev])
  assert.is(again.brokenBy, null)
  await again.close()
})

test.run()
