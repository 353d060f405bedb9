// A guest boots from a disk that was migrated in full to an archive tier (real QEMU, real
// daemon and FUSE view): the first boot makes an ext4 on the vsm disk and writes files;
// the disk goes to a directory archive (the pool keeps none of it); a second boot
// (cache=none, so every read reaches the daemon) mounts it and reads one file. The reads
// recall only what they touch: afterwards the host sees part of the disk home and the rest
// still archived, and every byte of the disk, read back with O_DIRECT, is what it was.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawnSync } from 'child_process'
import { mkdirSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { bootGuest } from './helpers/guest'

const vsm = makeVsm({ deviceSize: '1G' })
test.after(() => vsm.cleanup())

const MiB = 1 << 20

const WRITE = `
mkfs.ext4 -q -F /dev/vda; mkdir -p /m; mount -t ext4 /dev/vda /m
i=1
while [ $i -le 8 ]; do dd if=/dev/urandom of=/m/f$i bs=256K count=4 2>/dev/null; i=$((i+1)); done
sync
echo "@@F3=$(sha256sum /m/f3 | cut -d' ' -f1)@@"
umount /m
echo "@@DONE=1@@"
`

const READ = `
mkdir -p /m; mount -t ext4 -o ro,noload /dev/vda /m
echo "@@F3=$(sha256sum /m/f3 | cut -d' ' -f1)@@"
umount /m
echo "@@DONE=1@@"
`

/** sha256 of the whole file, read with O_DIRECT (dd aligns its buffer): from the daemon, not the host's page cache. */
function directSha(path: string): string {
  const r = spawnSync('sh', ['-c', 'dd if="$1" iflag=direct bs=1M status=none | sha256sum', 'sh', path], { encoding: 'utf8' })
  assert.is(r.status, 0, r.stderr)
  return r.stdout.split(' ')[0]
}

test('a guest boots from a disk migrated in full to an archive: its reads recall only what they touch, every byte intact', async () => {
  await vsm.up()
  await vsm.run('hsm', 'tier', 'add', 'fast', '--volume', 'vol0')
  mkdirSync(join(vsm.home, 'cold-archive'))
  await vsm.run('hsm', 'tier', 'add', 'cold', '--archive', join(vsm.home, 'cold-archive'))
  await vsm.run('disk', 'create', 'g.img', '--size', '128M')
  const img = join(vsm.mount, 'g.img')
  const first = await bootGuest({ disks: [{ path: img, iface: 'virtio' }], script: WRITE, timeoutMs: 300_000 })
  assert.is(first.markers.DONE, '1', first.output.slice(-2000))
  const before = directSha(img)
  const residency = async () => (await vsm.json('hsm', 'status', 'g.img')).files[0].bytes as Record<string, number>
  const allocated = (await residency()).fast
  assert.ok(allocated >= 8 * MiB, `the guest wrote ${allocated} bytes`)
  const job = /job (\d+)/.exec(await vsm.run('hsm', 'migrate', 'g.img', '--tier', 'cold'))![1]
  assert.not.ok((await vsm.json('job', 'wait', job)).error)
  assert.equal(await residency(), { cold: allocated }, 'all of it in the archive')

  const second = await bootGuest({ disks: [{ path: img, iface: 'virtio', readonly: true, cache: 'none' }], script: READ, timeoutMs: 300_000 })
  assert.is(second.markers.DONE, '1', second.output.slice(-2000))
  assert.is(second.markers.F3, first.markers.F3, 'the file the guest read is what it wrote')
  const after = await residency()
  assert.ok(after.fast > 0 && after.fast <= allocated / 2, `the boot recalled ${after.fast} of ${allocated} bytes`)
  assert.is(after.fast + after.cold, allocated)
  console.log(`hsm-guest: the boot recalled ${(after.fast / MiB).toFixed(1)} MiB of ${(allocated / MiB).toFixed(1)} MiB`)
  assert.is(directSha(img), before, 'every byte of the disk')
  const r = await vsm.json('fs', 'check')
  assert.ok(r.ok, r.errors.join('; '))
})

test.run()
