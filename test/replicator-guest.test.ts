// Disaster recovery with a real guest, over a real OpenSSH sshd on 127.0.0.1: a QEMU guest
// (Debian's stock kernel) makes ext4 on a disk of a sync-mode group's primary, writes a
// file of random data, records its checksum, syncs and powers off; the primary is killed
// -9; `vsm repl takeover` on the secondary; a guest booted there from the taken-over disk
// reads the same checksum, and e2fsck on the host finds the file system clean.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { join } from 'path'
import { bootGuest } from './helpers/guest'
import { replCreate, sitePair, upWithDisk } from './helpers/repl-sites'

const { primary, secondary, sshd, until } = sitePair(test, 'guest')

const WRITE = `
mkfs.ext4 -q -F /dev/vda || { echo "@@ERR=mkfs@@"; exit 1; }
mkdir -p /m; mount -t ext4 /dev/vda /m || { echo "@@ERR=mount@@"; exit 1; }
dd if=/dev/urandom of=/m/data bs=1M count=8 2>/dev/null
echo "@@SUM=$(sha256sum /m/data | cut -d' ' -f1)@@"
sync; umount /m
echo "@@DONE=1@@"
`
const VERIFY = `
mkdir -p /m; mount -t ext4 /dev/vda /m || { echo "@@ERR=mount@@"; exit 1; }
echo "@@SUM=$(sha256sum /m/data | cut -d' ' -f1)@@"
umount /m
echo "@@DONE=1@@"
`

test('a guest\'s synced writes on the primary boot on the secondary after kill -9 and takeover (sync mode)', async () => {
  await upWithDisk(primary, secondary, 'vm.img', '64M')
  await replCreate(primary, secondary, sshd(), 'g', '--mode', 'sync', '--log-size', '32M')
  await until('the initial sync', () => primary.json('repl', 'status', 'g').then((s) => s[0]), (s) => s.state === 'replicating' && s.lagBytes === 0)

  const wrote = await bootGuest({ disks: [{ path: join(primary.mount, 'vm.img'), iface: 'virtio' }], script: WRITE, timeoutMs: 240_000 })
  assert.ok(wrote.ok && wrote.markers.DONE === '1', `the guest on the primary failed: ${wrote.markers.ERR ?? ''}\n${wrote.output.slice(-3000)}`)
  assert.match(wrote.markers.SUM, /^[0-9a-f]{64}$/)
  primary.kill9()

  await secondary.json('repl', 'takeover', 'g')
  const disk = join(secondary.mount, 'vm.img')
  const read = await bootGuest({ disks: [{ path: disk, iface: 'virtio' }], script: VERIFY, timeoutMs: 240_000 })
  assert.ok(read.ok && read.markers.DONE === '1', `the guest on the secondary failed: ${read.markers.ERR ?? ''}\n${read.output.slice(-3000)}`)
  assert.is(read.markers.SUM, wrote.markers.SUM, 'the taken-over disk holds every byte the guest synced')
  execFileSync('e2fsck', ['-fn', disk], { stdio: 'pipe' })
})

test.run()
