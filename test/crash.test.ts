// Crash: kill -9 of the daemon while a writer streams fsync'd writes into a disk in
// the FUSE view. After `vsm up`, every write acknowledged by fsync is there byte for
// byte (a write in flight may hold its old or its new contents), and the fs check is clean;
// once per FUSE binding.
import * as assert from 'uvu/assert'
import { join } from 'path'
import { makeVsm, perBinding } from './helpers/daemon'
import { SLOT, acknowledgedCount, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const SLOTS = 512

perBinding('crash', (test, fuse) => {
  const vsm = makeVsm({ deviceSize: '1G', fuse })
  test.after(() => vsm.cleanup())

  test('every fsync-acknowledged write survives kill -9 of the daemon, three times over', async () => {
    await vsm.up()
    await vsm.run('disk', 'create', 'crash.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
    const img = join(vsm.mount, 'crash.img')
    const journal = join(vsm.home, 'writer.journal')
    for (let round = 0; round < 3; round++) {
      const before = acknowledgedCount(journal)
      const exited = startWriter(img, journal, SLOTS, round + 1)
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
})
