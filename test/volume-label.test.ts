// Label slots: alternate by seq parity; a torn or corrupt write of one slot leaves
// the other generation readable.
import * as path from 'path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { tmpDir, MiB } from './helpers/volume-tmp'
import { openDevice } from '../src/volume/device'
import { readLabel, writeLabel, encodeLabel, Label, LABEL_SLOT_BYTES } from '../src/volume/label'
import { emptyConfig, PoolConfig } from '../src/volume/config'
import { FaultDev } from '../src/block/fault'

const t = suite('volume labels')

function label(seq: number, volumes = 50): Label {
  const config: PoolConfig = emptyConfig('pool-1')
  config.seq = seq
  // big enough that a label spans several sectors and a tear can cut it
  for (let i = 0; i < volumes; i++) {
    config.volumes.push({ id: `id${i}`, name: `vol${i}-g${seq}`, layout: 'mirror', size: MiB, copies: 2, created: 'x',
      members: [{ device: 'd1', offset: i * MiB, length: MiB, state: 'ok' }, { device: 'd2', offset: i * MiB, length: MiB, state: 'ok' }] })
  }
  return { poolId: 'pool-1', deviceId: 'd1', deviceName: 'a', seq, config }
}

t('highest valid seq wins; slots alternate; torn write falls back to the previous generation', async () => {
  const tmp = await tmpDir()
  const dev = await openDevice(path.join(tmp.dir, 'd.img'), { create: 4 * MiB })
  try {
    assert.is((await readLabel(dev)).label, null, 'blank device has no label')
    assert.ok(encodeLabel(label(1)).length > 8192)
    await writeLabel(dev, label(5))
    await writeLabel(dev, label(6))
    let r = await readLabel(dev)
    assert.is(r.label!.seq, 6)
    assert.equal(r.slots.map((s) => s?.seq), [6, 5])
    assert.is(r.label!.config.volumes.length, 50)

    // seq 7 goes to slot B (over 5); the device dies after its first 4 KiB
    const torn = new FaultDev(dev, { stopAfterWrites: 0, tearBytes: 4096 })
    let threw = false
    try { await writeLabel(torn, label(7)) } catch { threw = true }
    assert.ok(threw)
    r = await readLabel(dev)
    assert.is(r.label!.seq, 6, 'previous generation survives')
    assert.is(r.slots[1], null, 'torn slot rejected by crc')

    // a flipped byte in the newest slot is caught as well
    await writeLabel(dev, label(7))
    const one = Buffer.alloc(1)
    await dev.read(one, LABEL_SLOT_BYTES + 2000)
    one[0] ^= 0x20
    await dev.write(one, LABEL_SLOT_BYTES + 2000)
    assert.is((await readLabel(dev)).label!.seq, 6)
  } finally {
    await dev.close()
    await tmp.cleanup()
  }
})

t('a config too large for a slot is refused, not truncated', () => {
  assert.throws(() => encodeLabel(label(1, 2000)), /does not fit/)
})

t.run()
