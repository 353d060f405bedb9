// A member fails and the pool cannot record it (its configuration cannot be written:
// seen with the home's file system full). Before, the layouts swallowed the recording's
// error and acknowledged writes that had landed on the other members only, so after a
// restart the pool would have trusted the stale member as in sync. Now every write and
// flush fails while the failure is unrecorded; once recording works (retried by the
// writes, at most once a second) writes are acknowledged again. In-process layouts on
// memory devices, the member failed by a fault node (blkdebug's role).
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import type { BlockDev } from '../src/block/blockdev'
import { FaultDev } from '../src/block/fault'
import { MirrorDev } from '../src/volume/mirror'
import { Raid5Dev } from '../src/volume/raid5'
import { MemDev } from './helpers/fs-memdev'

const MiB = 1 << 20
const R5 = { stripeUnit: 16384, journal: 2 * MiB, tag: '0badc0de-0000-4000-8000-000000000002' }

const outcome = (p: Promise<unknown>) => p.then(() => 'acknowledged', (e: Error) => e.message)

/** The pool's recorder, refusing until told otherwise; counts its tries. */
function recorder() {
  const r = { works: false, tries: 0, recorded: [] as number[], report: async (i: number) => {
    r.tries++
    if (!r.works) throw new Error('pool.json: ENOSPC')
    r.recorded.push(i)
  } }
  return r
}

const layouts: [string, (ms: BlockDev[], report: (i: number) => Promise<void>) => Promise<BlockDev & { flush(): Promise<void> }>, number][] = [
  ['mirror', async (ms, report) => new MirrorDev(ms, { onMemberFailed: report }), 2],
  ['raid5', async (ms, report) => {
    const v = new Raid5Dev(ms, { ...R5, onMemberFailed: report })
    await v.replay()
    return v
  }, 3],
]

for (const [name, make, n] of layouts) {
  test(`${name}: no write or flush is acknowledged while a member's failure is not recorded`, async () => {
    const bad = new FaultDev(new MemDev(8 * MiB))
    const ms: BlockDev[] = [bad, ...Array.from({ length: n - 1 }, () => new MemDev(8 * MiB))]
    const rec = recorder()
    const vol = await make(ms, rec.report)
    await vol.write(Buffer.alloc(65536, 1), 0)
    bad.setRules([{ op: 'write' }])
    assert.match(await outcome(vol.write(Buffer.alloc(65536, 2), 0)), /could not record it .*ENOSPC/)
    // the member is out: this write lands on the others alone, and must not be acknowledged either
    assert.match(await outcome(vol.write(Buffer.alloc(65536, 3), 65536)), /could not record/)
    assert.match(await outcome(vol.flush()), /could not record/)
    rec.works = true
    await new Promise((r) => setTimeout(r, 1100))
    await vol.write(Buffer.alloc(65536, 4), 65536)
    await vol.flush()
    assert.equal(rec.recorded, [0])
    assert.ok(rec.tries >= 2 && rec.tries <= 4, `recording tried ${rec.tries} times (at most once a second)`)
    const back = Buffer.alloc(65536)
    await vol.read(back, 65536)
    assert.ok(back.every((b) => b === 4))
  })
}

test.run()
