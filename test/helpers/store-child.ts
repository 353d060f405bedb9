// The child of the pool store's crash test (test/volume-store.test.ts): opens the pool
// in <home>, and creates volume v2 while a wrapper counts label writes; once `after`
// labels have been written and flushed it kills itself with SIGKILL, a real kill -9
// between two label writes of one change (or, after the last, before pool.json).
import { Pool } from '../../src/volume/pool'
import type { BlockDev } from '../../src/block/blockdev'
import { LABEL_SLOTS } from '../../src/volume/label'

async function main(): Promise<void> {
  const [home, afterArg] = process.argv.slice(2)
  const after = Number(afterArg)
  let written = 0
  let armed = false
  const wrapDevice = (_name: string, dev: BlockDev): BlockDev => new Proxy(dev, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv)
      if (prop === 'write') {
        return async (buf: Buffer, off: number) => {
          await target.write(buf, off)
          if (armed && LABEL_SLOTS.includes(off)) written++
        }
      }
      if (prop === 'flush') {
        return async () => {
          await target.flush()
          if (armed && written === after) process.kill(process.pid, 'SIGKILL')
        }
      }
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
  const pool = await Pool.open(home, { wrapDevice })
  armed = true
  await pool.createVolume('v2', { layout: 'raid5', devices: ['a', 'b', 'c'], size: 4 << 20 })
  process.stdout.write('not killed\n')
  process.exit(1)
}

main().catch((e) => { process.stderr.write(`${e?.stack ?? e}\n`); process.exit(2) })
