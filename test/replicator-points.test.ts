// The point keeper's mechanics against in-process fake disks (a mock: the real disks and
// schedule run in replicator-schedule): stopping waits for a point under way, so the
// daemon's stop cannot close the fs under it (in CI a point cut off by `vsm down` left
// its snapshot behind, listed as a point after the restart); a point that fails deletes
// the snapshots it made, so no point of fewer disks is left.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { PointKeeper, listPoints, takePoint, type PointDisks, type ScheduledGroup } from '../src/replicator/points'

/** Disks held in memory; snapshot() of `slow` waits for release(), of `bad` fails. */
function fakeDisks(names: string[], opts: { slow?: string; bad?: string } = {}) {
  const snaps = new Map<string, string[]>(names.map((n) => [n, []]))
  const frozen = new Set<string>()
  let release = () => {}
  const held = new Promise<void>((r) => { release = r })
  const disks: PointDisks = {
    list: () => names,
    freeze: async (d) => { frozen.add(d) },
    thaw: (d) => { frozen.delete(d) },
    snapshot: async (d, name) => {
      if (d === opts.slow) await held
      if (d === opts.bad) throw new Error(`cannot snapshot ${d}`)
      snaps.get(d)!.push(name)
    },
    snapshots: (d) => snaps.get(d)!,
    deleteSnapshot: async (d, name) => { snaps.set(d, snaps.get(d)!.filter((s) => s !== name)) },
    sync: async () => {},
  }
  return { disks, frozen, release }
}

function group(): ScheduledGroup {
  return { name: 'g', schedule: { everyMs: 1000, keep: 2 }, takenOver: false, pointTaken: async () => {}, onSecondary: () => null, forgetPoints: async () => {} }
}

test('stop() resolves only once the point under way has been taken', async () => {
  const { disks, release } = fakeDisks(['a.img', 'b.img'], { slow: 'b.img' })
  const g = group()
  const taken: string[] = []
  const keeper = new PointKeeper(disks, () => [g], { taken: (_g, name) => taken.push(name), failed: (_g, why) => assert.unreachable(why) })
  void keeper.tick(Date.now())
  let stopped = false
  const stopping = keeper.stop().then(() => { stopped = true })
  await new Promise((r) => setTimeout(r, 50))
  assert.not.ok(stopped, 'stop returned while a disk was being snapshotted')
  release()
  await stopping
  assert.is(taken.length, 1)
  assert.equal(listPoints(disks, g).map((p) => p.disks), [2], 'one point, of both disks')
})

test('a point that fails deletes the snapshots it made and thaws every disk', async () => {
  const { disks, frozen } = fakeDisks(['a.img', 'b.img', 'c.img'], { bad: 'c.img' })
  const g = group()
  const err = await takePoint(disks, g, Date.now()).then(() => null, (e: Error) => e.message)
  assert.is(err, 'cannot snapshot c.img')
  assert.equal(listPoints(disks, g), [], 'no point of fewer disks is left')
  assert.is(frozen.size, 0)
})

test.run()
