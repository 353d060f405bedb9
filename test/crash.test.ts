// Crash: kill -9 of the daemon while a writer streams fsync'd writes into a disk in
// the FUSE view. After `vsm up`, every write acknowledged by fsync is there byte for
// byte (a write in flight may hold its old or its new contents), and the fs check is clean;
// once per FUSE binding, once with 16 writes in flight, once with the checksum
// tables' page cache held to 3 pages, and once with snapshots taken and deleted under
// the writer (its copy-on-write writes meet chunks the snapshots share): every
// snapshot still there after the restart reads as it did when taken.
import { suite, Test } from 'uvu'
import * as assert from 'uvu/assert'
import { join } from 'path'
import { createHash } from 'crypto'
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'fs'
import { makeVsm, perBinding, Vsm } from './helpers/daemon'
import { SLOT, acknowledgedCount, slotData, startWriter, verifyAcknowledged } from './helpers/crash-writer'

const SLOTS = 512

function crashRounds(test: Test, vsm: Vsm, rounds: number, depth = 1, snapshots = false): void {
  test.after(() => vsm.cleanup())

  test(`every fsync-acknowledged write survives kill -9 of the daemon, ${rounds} times over${depth > 1 ? `, ${depth} writes in flight` : ''}${snapshots ? ', snapshots taken and deleted meanwhile read as taken' : ''}`, async () => {
    await vsm.up()
    await vsm.run('disk', 'create', 'crash.img', '--size', `${(SLOTS * SLOT) >> 20}M`)
    const img = join(vsm.mount, 'crash.img')
    const journal = join(vsm.home, 'writer.journal')
    // snapshot name -> sha256 of its contents when taken
    const taken = new Map<string, string>()
    const sha = (name: string) => createHash('sha256').update(readFileSync(join(vsm.mount, '.snapshots', 'crash.img', name))).digest('hex')
    let made = 0
    if (snapshots) {
      // every slot allocated first: each write after a snapshot meets blocks it shares
      const fd = openSync(img, 'r+')
      try { for (let s = 0; s < SLOTS; s++) writeSync(fd, slotData(s, 0), 0, SLOT, s * SLOT); fsyncSync(fd) } finally { closeSync(fd) }
    }
    for (let round = 0; round < rounds; round++) {
      const before = acknowledgedCount(journal)
      const exited = startWriter(img, journal, SLOTS, round + 1, undefined, depth)
      const until = Date.now() + 1500 + Math.random() * 2500
      while (snapshots && Date.now() < until) {
        const name = `s${++made}`
        await vsm.run('snapshot', 'create', 'crash.img', name)
        taken.set(name, sha(name))
        // keep three: the oldest goes, freeing what only it held while the writer diverges
        if (taken.size > 3) {
          const oldest = taken.keys().next().value!
          await vsm.run('snapshot', 'delete', 'crash.img', oldest)
          taken.delete(oldest)
        }
        await new Promise((r) => setTimeout(r, 300))
      }
      await new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))
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
      if (!snapshots) continue
      const listed = (await vsm.json('snapshot', 'list', 'crash.img')).map((x: { name: string }) => x.name).sort()
      assert.equal(listed, [...taken.keys()].sort(), `round ${round}: the snapshots created and not deleted`)
      for (const [name, sum] of taken) assert.is(sha(name), sum, `round ${round}: snapshot ${name} reads as taken`)
    }
    if (snapshots) assert.ok(made >= 2 * rounds, `only ${made} snapshots taken`)
  })
}

perBinding('crash', (test, fuse) => crashRounds(test, makeVsm({ deviceSize: '1G', fuse }), 3))

// answers to writes with others in flight go by the binding's replier thread
const deep = suite('crash [16 writes in flight]')
crashRounds(deep, makeVsm({ deviceSize: '1G' }), 2, 16)
deep.run()

const snapped = suite('crash [snapshots under the writer]')
crashRounds(snapped, makeVsm({ deviceSize: '1G' }), 3, 1, true)
snapped.run()

const pressed = suite('crash [table cache of 3 pages]')
crashRounds(pressed, makeVsm({ deviceSize: '1G', env: { VSM_TABLE_CACHE: '12K' } }), 2)
pressed.run()
