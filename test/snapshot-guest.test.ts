// Snapshots of a running guest: the guest writes files continuously (dd + sync in a
// loop, reporting each file's checksum once synced) until the host puts STOP on its
// mailbox disk; meanwhile the host takes a snapshot about every second, each after the
// guest has synced more, so the test does not depend on how fast the guest is. A second boot attaches every snapshot (QEMU opens the images read-only:
// -snapshot keeps the guest's journal replay in a throwaway overlay); each ext4 must
// check clean with e2fsck -fn after its journal is replayed and hold every file the
// guest had synced before the snapshot. Then revert + boot shows the old contents, and
// a clone boots and diverges while the snapshot it came from stays as it was.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'crypto'
import { readFileSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { bootGuest } from './helpers/guest'

const vsm = makeVsm({ deviceSize: '2G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex')

const WRITER = `
mkfs.ext4 -q -F /dev/vda; mkdir -p /m; mount -t ext4 /dev/vda /m
echo "READY"
i=1
while [ $i -le 100 ]; do
  dd if=/dev/urandom of=/m/f$i bs=256K count=4 2>/dev/null
  sync
  echo "SYNCED $i $(sha256sum /m/f$i | cut -d' ' -f1)"
  i=$((i+1))
  echo 3 > /proc/sys/vm/drop_caches
  if dd if=/dev/vdb bs=512 count=1 2>/dev/null | grep -q STOP; then break; fi
done
umount /m
echo "@@DONE=1@@"
`

/** For each disk: e2fsck -fn after the journal replay, then each file's checksum. */
const CHECK = `
for d in $(ls /dev/vd? | sort); do
  n=$(basename $d)
  e2fsck -fp $d >/dev/null 2>&1 || true
  rc=0; e2fsck -fn $d >/tmp/fsck.$n 2>&1 || rc=$?
  echo "@@FSCK_$n=$rc@@"
  [ $rc = 0 ] || cat /tmp/fsck.$n
  mkdir -p /m; mount -t ext4 -o ro $d /m
  for f in /m/f*; do [ -f "$f" ] && echo "SUM $n $(basename $f) $(sha256sum $f | cut -d' ' -f1)"; done
  umount /m
done
echo "@@DONE=1@@"
`

const sums = (out: string, dev: string) => {
  const m = new Map<string, string>()
  for (const x of out.matchAll(new RegExp(`SUM ${dev} (f\\d+) ([0-9a-f]{64})`, 'g'))) m.set(x[1], x[2])
  return m
}

test('snapshots of a writing guest boot with clean ext4 holding what was synced; revert; a clone diverges', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'g.img', '--size', '128M')
  const img = join(vsm.mount, 'g.img')
  const mbox = join(vsm.home, 'mailbox.img')
  writeFileSync(mbox, Buffer.alloc(1 << 20))
  let out = ''
  const synced = new Map<number, string>()
  const guest = bootGuest({
    disks: [{ path: img, iface: 'virtio' }, { path: mbox, iface: 'virtio', cache: 'writeback' }], script: WRITER, timeoutMs: 240_000,
    onOutput: (t) => {
      out += t
      for (const m of out.matchAll(/SYNCED (\d+) ([0-9a-f]{64})/g)) synced.set(Number(m[1]), m[2])
    },
  })
  let finished = false
  void guest.then(() => { finished = true })
  const snaps: { name: string; synced: number }[] = []
  while (!out.includes('READY') && !finished) await sleep(100)
  try {
    while (!finished && snaps.length < 4) {
      const n = synced.size
      if (snaps.length && n <= snaps[snaps.length - 1].synced) { await sleep(100); continue }
      const name = `s${snaps.length}`
      await vsm.run('snapshot', 'create', 'g.img', name)
      snaps.push({ name, synced: n })
      await sleep(1000)
    }
  } finally {
    const stop = Buffer.alloc(512); stop.write('STOP')
    writeFileSync(mbox, stop)
  }
  const r1 = await guest
  assert.ok(r1.ok && r1.markers.DONE === '1', `writer boot failed\n${r1.output.slice(-2000)}`)
  console.log(`  files synced before each snapshot: ${snaps.map((s) => `${s.name}=${s.synced}`).join(' ')} (of ${synced.size})`)
  assert.ok(snaps.length >= 3, `only ${snaps.length} snapshots while the guest wrote`)
  assert.ok(snaps[snaps.length - 1].synced > snaps[0].synced, 'the guest did not write between snapshots')

  const before = snaps.map((s) => sha(join(vsm.mount, '.snapshots', 'g.img', s.name)))
  const r2 = await bootGuest({
    disks: snaps.map((s) => ({ path: join(vsm.mount, '.snapshots', 'g.img', s.name), iface: 'virtio' as const, cache: 'writeback' as const })),
    qemuArgs: ['-snapshot'], script: CHECK, timeoutMs: 240_000,
  })
  assert.ok(r2.ok && r2.markers.DONE === '1', `check boot failed\n${r2.output.slice(-3000)}`)
  snaps.forEach((s, k) => {
    const dev = `vd${String.fromCharCode(97 + k)}`
    assert.is(r2.markers[`FSCK_${dev}`], '0', `${s.name}: e2fsck -fn\n${r2.output.slice(-2000)}`)
    const got = sums(r2.output, dev)
    for (let i = 1; i <= s.synced; i++) assert.is(got.get(`f${i}`), synced.get(i), `${s.name}: file f${i}, synced before it`)
  })

  // revert to the first snapshot; clone the last one
  const first = snaps[0], last = snaps[snaps.length - 1]
  await vsm.run('snapshot', 'revert', 'g.img', first.name)
  await vsm.run('disk', 'clone', `g.img@${last.name}`, 'c.img')
  const r3 = await bootGuest({
    disks: [{ path: img, iface: 'virtio' }, { path: join(vsm.mount, 'c.img'), iface: 'virtio' }],
    script: CHECK.replace('umount /m\ndone', 'if [ $n = vdb ]; then mount -o remount,rw /m; echo new > /m/diverged; sync; fi\n  umount /m\ndone'),
    timeoutMs: 240_000,
  })
  assert.ok(r3.ok && r3.markers.DONE === '1', `revert/clone boot failed\n${r3.output.slice(-3000)}`)
  const reverted = sums(r3.output, 'vda'), cloned = sums(r3.output, 'vdb')
  assert.ok(reverted.size >= first.synced && reverted.size < last.synced, `reverted disk has ${reverted.size} files`)
  for (let i = 1; i <= first.synced; i++) assert.is(reverted.get(`f${i}`), synced.get(i))
  for (let i = 1; i <= last.synced; i++) assert.is(cloned.get(`f${i}`), synced.get(i))
  let code = 0
  try { await vsm.run('disk', 'compare', 'c.img', `g.img@${last.name}`) } catch (e) { code = (e as { code: number }).code }
  assert.is(code, 1, 'the clone did not diverge')
  snaps.forEach((s, k) => assert.is(sha(join(vsm.mount, '.snapshots', 'g.img', s.name)), before[k], `${s.name} changed`))
  for (const d of ['g.img', 'c.img']) assert.match(await vsm.run('disk', 'check', d), /consistent/)
})

test.run()
