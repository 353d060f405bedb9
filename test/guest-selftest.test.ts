// Self-test of the guest VM harness (test/helpers/guest.ts): an unmodified kernel makes
// ext4 on a virtio-blk disk and on a virtio-scsi disk, writes known data and powers off;
// a second boot reads it back from read-only disks, and the host checks the images.
// A second case puts the disk behind qemu-storage-daemon's FUSE export, the stand-in for
// the vsm view, to prove the cache mode bootGuest picks on FUSE keeps the guest's data.
// This proves the harness before the vsm guest tests rely on it.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { createHash } from 'crypto'
import { promises as fsp } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { bootGuest, type BootResult } from './helpers/guest'
import { startQsdExport } from './helpers/qsd'

// `seq` output is the same inside busybox and here, so the host knows the expected hash.
const N = 200000
const expected = createHash('sha256')
  .update(Array.from({ length: N }, (_, i) => `${i + 1}\n`).join(''))
  .digest('hex')

function explain(r: BootResult) {
  return `guest failed (timedOut=${r.timedOut} qemuExit=${r.qemuExit} scriptExit=${r.scriptExit}):\n${r.output.slice(-4000)}`
}

test('guest writes ext4 on virtio and scsi disks, a second boot and the host read it back', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vsm-guest-selftest-'))
  try {
    const a = path.join(dir, 'virtio.img')
    const b = path.join(dir, 'scsi.img')
    for (const f of [a, b]) {
      await fsp.writeFile(f, '')
      await fsp.truncate(f, 64 << 20)
    }

    const first = await bootGuest({
      disks: [{ path: a, iface: 'virtio' }, { path: b, iface: 'scsi' }],
      script: `
        echo "@@SERIAL_VDA=$(cat /sys/block/vda/serial)@@"
        for d in vda sda; do
          mkfs.ext4 -F -q /dev/$d
          mkdir -p /mnt/$d && mount -t ext4 /dev/$d /mnt/$d
          seq 1 ${N} > /mnt/$d/data.txt
          sync
          echo "@@SHA_$d=$(sha256sum /mnt/$d/data.txt | cut -d' ' -f1)@@"
          umount /mnt/$d
        done
      `,
    })
    assert.ok(first.ok, explain(first))
    assert.is(first.markers.VSM_DISKS, 'sda,vda,')
    assert.is(first.markers.SERIAL_VDA, 'vsm0', 'virtio disks are named in the order given')
    assert.is(first.markers.SHA_vda, expected)
    assert.is(first.markers.SHA_sda, expected)
    console.log(`  first boot: ${first.durationMs} ms wall, guest ready at ${first.markers.VSM_BOOTED} s, cache=${first.cacheModes.join(',')}`)

    const second = await bootGuest({
      disks: [{ path: a, iface: 'virtio', readonly: true }, { path: b, iface: 'scsi', readonly: true }],
      script: `
        for d in vda sda; do
          mkdir -p /mnt/$d && mount -t ext4 -o ro /dev/$d /mnt/$d
          echo "@@SHA_$d=$(sha256sum /mnt/$d/data.txt | cut -d' ' -f1)@@"
          if echo x > /mnt/$d/nope 2>/dev/null; then echo "@@RO_$d=no@@"; else echo "@@RO_$d=yes@@"; fi
          umount /mnt/$d
        done
      `,
    })
    assert.ok(second.ok, explain(second))
    assert.is(second.markers.SHA_vda, expected)
    assert.is(second.markers.SHA_sda, expected)
    assert.is(second.markers.RO_vda, 'yes')
    assert.is(second.markers.RO_sda, 'yes')

    for (const img of [a, b]) {
      // e2fsck -n exits non-zero on any inconsistency, which execFileSync turns into a throw.
      execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' })
      const data = execFileSync('debugfs', ['-R', 'cat /data.txt', img], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 8 << 20 })
      assert.is(createHash('sha256').update(data).digest('hex'), expected, `${img}: host sees the guest's bytes`)
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true })
  }
})

test('a disk on a FUSE export (qemu-storage-daemon) keeps ext4 data across boots with the default cache mode', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vsm-guest-qsd-'))
  const qsd = await startQsdExport(dir, 128 << 20)
  const exp = qsd.path
  try {
    // Random data, 16 MiB: enough for ext4 writeback to send large multi-page requests.
    const write = await bootGuest({
      disks: [{ path: exp, iface: 'virtio' }],
      script: `
        mkfs.ext4 -F -q /dev/vda
        mount -t ext4 /dev/vda /mnt
        dd if=/dev/urandom of=/mnt/data bs=1M count=16 2>/dev/null
        sync
        echo "@@SHA=$(sha256sum /mnt/data | cut -d' ' -f1)@@"
        umount /mnt
      `,
    })
    assert.ok(write.ok, explain(write))
    assert.equal(write.cacheModes, ['writeback'])
    const read = await bootGuest({
      disks: [{ path: exp, iface: 'scsi' }],
      script: `
        mount -t ext4 /dev/sda /mnt
        echo "@@SHA=$(sha256sum /mnt/data | cut -d' ' -f1)@@"
        umount /mnt
      `,
    })
    assert.ok(read.ok, explain(read))
    assert.match(write.markers.SHA, /^[0-9a-f]{64}$/)
    assert.is(read.markers.SHA, write.markers.SHA, 'second boot reads what the first wrote')
    execFileSync('e2fsck', ['-fn', exp], { stdio: 'pipe' })
  } finally {
    await qsd.stop()
    await fsp.rm(dir, { recursive: true, force: true })
  }
})

test.run()
