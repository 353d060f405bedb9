// An unmodified guest keeps running while its storage changes under it: its volume is
// relaid out from concat to mirror, then a device of the mirror fails and is replaced
// by a rebuild. The guest writes files and syncs the whole time; afterwards its ext4
// checks clean on the host and a second boot verifies every file it wrote.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { readFileSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { bootGuest } from './helpers/guest'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// The guest writes until the host puts STOP on a second, plain disk (its mailbox), and
// reports how many files it has synced in that disk's second page (its own page, so the
// guest's write-back of it can never carry a stale first sector over the host's STOP).
const WRITER = `
mkfs.ext4 -q -F /dev/vda; mkdir -p /m; mount -t ext4 /dev/vda /m
i=0; t0=$(date +%s)
while :; do
  i=$((i+1))
  dd if=/dev/urandom of=/m/f$i bs=64k count=8 2>/dev/null
  (cd /m && sha256sum f$i >> sums)
  printf 'N=%08d' $i | dd of=/dev/vdb bs=512 seek=8 conv=notrunc,sync 2>/dev/null
  sync
  echo 3 > /proc/sys/vm/drop_caches
  if dd if=/dev/vdb bs=512 count=1 2>/dev/null | grep -q STOP; then break; fi
  if [ $(( $(date +%s) - t0 )) -gt 400 ]; then echo "@@ERR=no STOP from the host@@"; break; fi
done
umount /m
echo "@@FILES=$i@@"
`
const VERIFY = `
mkdir -p /m; mount -t ext4 -o ro /dev/vda /m; cd /m
echo "@@LINES=$(wc -l < sums)@@"
if sha256sum -c sums >/dev/null 2>&1; then echo "@@VERIFY=ok@@"; else echo "@@VERIFY=$(sha256sum -c sums 2>/dev/null | grep -c FAILED) failed@@"; fi
`

/** How many files the guest has synced so far, from its mailbox's second page. */
function filesSynced(mbox: string): number {
  const m = /^N=(\d{8})/.exec(readFileSync(mbox).subarray(4096, 4096 + 10).toString('latin1'))
  return m ? Number(m[1]) : 0
}

async function waitForFiles(mbox: string, atLeast: number, guestDone: () => boolean) {
  const deadline = Date.now() + 300_000
  while (filesSynced(mbox) < atLeast) {
    if (guestDone() || Date.now() > deadline) throw new Error(`the guest synced ${filesSynced(mbox)} files, waiting for ${atLeast}`)
    await sleep(200)
  }
}

const jobOf = (out: string) => String(/job (\d+)/.exec(out)![1])
const vol0 = async () => (await vsm.json('volume', 'show', 'vol0'))

async function runJob(...args: string[]) {
  const done = await vsm.json('job', 'wait', jobOf(await vsm.run(...args)))
  assert.not.ok(done.error, `${args.join(' ')}: ${JSON.stringify(done.error)}`)
}

test('a guest writing through concat→mirror relayout, a device failure and a replace', async () => {
  await vsm.up()
  await vsm.run('device', 'add', 'e0', join(vsm.home, 'e0.img'), '--size', '2G')
  await vsm.run('device', 'add', 's0', join(vsm.home, 's0.img'), '--size', '2G')
  // Start from a concat, so the guest sees the concat → mirror change.
  await runJob('volume', 'relayout', 'vol0', '--layout', 'concat', '--devices', 'e0')
  assert.is((await vol0()).layout, 'concat')
  await vsm.run('disk', 'create', 'g.img', '--size', '256M')
  const img = join(vsm.mount, 'g.img')
  const mbox = join(vsm.home, 'mailbox.img')
  writeFileSync(mbox, Buffer.alloc(1 << 20))
  const disks = [{ path: img, iface: 'virtio' as const }, { path: mbox, iface: 'virtio' as const, cache: 'writeback' as const }]
  const guest = bootGuest({ disks, script: WRITER, timeoutMs: 480_000 })
  let guestDone = false
  guest.finally(() => { guestDone = true })
  let before = 0
  try {
    // The changes begin once the guest is writing (a loaded host boots it slowly).
    await waitForFiles(mbox, 2, () => guestDone)
    before = filesSynced(mbox)
    await runJob('volume', 'relayout', 'vol0', '--layout', 'mirror', '--devices', 'd0,d1')
    assert.is((await vol0()).layout, 'mirror')
    await vsm.run('device', 'offline', 'd1')
    assert.is((await vol0()).state, 'degraded')
    await runJob('volume', 'replace', 'vol0', 'd1', 's0')
    assert.is((await vol0()).state, 'healthy')
    assert.not.ok(guestDone, 'the guest stopped before the storage changes were over')
    // and it goes on writing on the new layout before it is told to stop
    await waitForFiles(mbox, filesSynced(mbox) + 2, () => guestDone)
  } finally {
    const stop = Buffer.alloc(512); stop.write('STOP')
    writeFileSync(mbox, stop)
  }
  const r = await guest
  assert.ok(r.ok && !r.markers.ERR, `guest: ${r.markers.ERR ?? ''}\n${r.output.slice(-2000)}`)
  const files = Number(r.markers.FILES)
  assert.ok(files >= before + 2, `${files} files written, ${before} of them before the changes began`)
  execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' })
  const v = await bootGuest({ disks: [{ path: img, iface: 'virtio', readonly: true }], script: VERIFY, timeoutMs: 240_000 })
  assert.is(v.markers.VERIFY, 'ok', v.output.slice(-2000))
  assert.is(Number(v.markers.LINES), files)
})

test.run()
