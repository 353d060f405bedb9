// Volumes of 64 TiB (issue 13): the filesystem here caps a file just under 16 TiB, so
// they are laid over several sparse files of 13 TiB. A raid5 of six and a raid10 of ten
// (checksummed, tagged tables) and a concat of five take writes near their ends and at
// offsets past 2^45 and survive a reopen; on the redundant ones a member replaced onto
// a new file is rebuilt in seconds (only what was written), serves with another member
// gone, and a scrub reads only what was written. The process stays within a bounded
// resident size and the files hold a few MiB.
import * as path from 'path'
import { promises as fsp, readFileSync } from 'fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { tmpDir, MiB, GiB } from './helpers/volume-tmp'
import { Pool } from '../src/volume/pool'
import type { LayoutKind } from '../src/volume/config'

const TiB = 2 ** 40
const t = suite('volume: 64 TiB over 13 TiB sparse files')
let tmp: { dir: string; cleanup: () => Promise<void> }
let pool: Pool | undefined
t.before.each(async () => { tmp = await tmpDir() })
t.after.each(async () => { await pool?.close().catch(() => {}); pool = undefined; await tmp.cleanup() })
const f = (n: string) => path.join(tmp.dir, n)

const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024

async function held(devs: string[]): Promise<number> {
  let n = 0
  for (const d of devs) n += (await fsp.stat(f(`${d}.img`))).blocks * 512
  return n
}

for (const [layout, count] of [['raid5', 6], ['raid10', 10], ['concat', 5]] as [LayoutKind, number][]) {
  t(`${layout} of 64 TiB on ${count} sparse 13 TiB files: writes near the end and past 2^45 survive a reopen`, async () => {
    const devs = Array.from({ length: count }, (_, i) => `d${i}`)
    pool = await Pool.create(f('home'))
    const redundant = layout !== 'concat'
    for (const n of [...devs, ...(redundant ? ['n'] : [])]) await pool.addDevice(n, f(`${n}.img`), 13 * TiB)
    // raid10 carves its tables (a 1024th) from the extents: asked for a little more to hold 64 TiB
    const made = await pool.createVolume('v', { layout, devices: devs, size: 64 * TiB + (layout === 'raid10' ? 80 * GiB : 0) })
    assert.ok(made.size >= 64 * TiB, `volume of ${made.size} bytes`)
    let v = await pool.openVolume('v')
    const at = [0, 2 ** 45 + 12345 * 4096, 64 * TiB - 4 * MiB]
    const data = at.map(() => randomBytes(MiB))
    for (let k = 0; k < at.length; k++) await v.write(data[k], at[k])
    await v.flush()
    await pool.close()
    pool = await Pool.open(f('home'))
    v = await pool.openVolume('v')
    const check = async (what: string) => {
      for (let k = 0; k < at.length; k++) {
        const got = Buffer.alloc(MiB)
        await v.read(got, at[k])
        assert.ok(got.equals(data[k]), `${what}: the MiB at ${at[k]}`)
      }
    }
    await check('after a reopen')
    if (redundant) {
      const t1 = Date.now()
      const { job: rj } = await pool.replaceMember('v', 'd1', 'n')
      const r = (await pool.jobs.wait(rj!)).result as { copied: number; skipped: number }
      console.log(`${layout} 64 TiB: replace d1 by n: ${Date.now() - t1} ms, ${r.copied} bytes copied, ${r.skipped} skipped`)
      assert.ok(r.copied < GiB, `rebuild copied ${r.copied}`)
      await pool.offlineDevice('d0')
      await check('replaced, then d0 offline')
      await pool.onlineDevice('d0')
      await pool.jobs.waitAll()
      const t0 = Date.now()
      const { job } = await pool.scrubVolume('v')
      const s = (await pool.jobs.wait(job)).result as { checkedBytes: number; skippedBytes: number; parityRowsFixed: number; repaired: unknown[] }
      console.log(`${layout} 64 TiB scrub: ${Date.now() - t0} ms, ${s.checkedBytes} bytes read, ${s.skippedBytes} skipped`)
      assert.ok(s.checkedBytes < GiB, `scrub read ${s.checkedBytes}`)
      assert.equal([s.parityRowsFixed, s.repaired.length], [0, 0])
    }
    const h = await held([...devs, ...(redundant ? ['n'] : [])])
    console.log(`${layout} 64 TiB: backing files hold ${(h / MiB).toFixed(1)} MiB, process ${(rss() / MiB).toFixed(0)} MiB resident`)
    assert.ok(h < 256 * MiB, `backing files hold ${h} bytes`)
    assert.ok(rss() < 512 * MiB, `resident ${rss()}`)
  })
}

t.run()
