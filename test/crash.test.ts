// Crash: kill -9 of the daemon while a writer streams fsync'd writes into a disk in
// the FUSE view. After `vsm up`, every write acknowledged by fsync is there byte for
// byte (a write in flight may hold its old or its new contents), and the fs check is clean;
// once per FUSE binding, once with 16 writes in flight, and once with the checksum
// tables' page cache held to 3 pages.
import { suite, Test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'path'
import { makeVsm, perBinding, Vsm } from './helpers/daemon'
import { SLOT, acknowledgedCount, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const SLOTS = 512

function crashRounds(test: Test, vsm: Vsm, rounds: number, depth = 1): void {
  test.after(() => vsm.cleanup())

  test(`every fsync-acknowledged write survives kill -9 of the daemon, ${rounds} times over${depth > 1 ? `, ${depth} writes in flight` : ''}`, async () => {
    await vsm.up()
    await vsm.run('disk', 'create', 'crash.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
    const img = join(vsm.mount, 'crash.img')
    const journal = join(vsm.home, 'writer.journal')
    for (let round = 0; round < rounds; round++) {
      const before = acknowledgedCount(journal)
      const exited = startWriter(img, journal, SLOTS, round + 1, undefined, depth)
      await new Promise((r) => setTimeout(r, 1500 + Math.random() * 2500))
      // A loaded machine may not have acknowledged enough by then: the kill waits for them.
      const deadline = Date.now() + 120_000
      while (acknowledgedCount(journal) - before <= 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      vsm.kill9()
      await exited
      await vsm.up()
      const checked = verifyAcknowledged(img, journal)
      assert.ok(checked > 10, `only ${checked} acknowledged writes in round ${round}`)
      const fsck = await vsm.json('fs', 'check')
      assert.ok(fsck.ok, `fs check: ${fsck.errors.join('; ')}`)
    }
  })
}

perBinding('crash', (test, fuse) => crashRounds(test, makeVsm({ deviceSize: '1G', fuse }), 3))

// answers to writes with others in flight go by the binding's replier thread
const deep = suite('crash [16 writes in flight]')
crashRounds(deep, makeVsm({ deviceSize: '1G' }), 2, 16)
deep.run()

const pressed = suite('crash [table cache of 3 pages]')
crashRounds(pressed, makeVsm({ deviceSize: '1G', env: { VSM_TABLE_CACHE: '12K' } }), 2)
pressed.run()
