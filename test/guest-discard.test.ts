// A guest's TRIM gives space back: QEMU with cache=none (O_DIRECT), discard=unmap and
// write-zeroes on, on a disk in the FUSE view (native binding). The guest writes 64 MiB
// to its virtio-blk disk and discards the first half with blkdiscard; the disk then holds
// only what was kept, and the kept data reads back on the host.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { createHash } from 'crypto'
import { readFileSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { bootGuest } from './helpers/guest'

const vsm = makeVsm({ deviceSize: '2G', fuse: 'native' })
test.after(() => vsm.cleanup())

const MiB = 1 << 20
const SCRIPT = `
dd if=/dev/urandom of=/dev/vda bs=1M count=64 oflag=direct 2>/dev/null || { echo "@@ERR=dd@@"; exit 1; }
blkdiscard -o 0 -l ${32 * MiB} /dev/vda || { echo "@@ERR=blkdiscard@@"; exit 1; }
sync
echo "@@SUM=$(dd if=/dev/vda bs=1M skip=32 count=32 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)@@"
echo "@@DONE=1@@"
`

test('a guest under cache=none with discard=unmap and write-zeroes frees what it discards', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'trim.img', '--size', '128M')
  const img = join(vsm.mount, 'trim.img')
  const r = await bootGuest({ disks: [{ path: img, iface: 'virtio', cache: 'none', unmap: true }], script: SCRIPT, timeoutMs: 240_000 })
  assert.ok(r.ok && r.markers.DONE === '1', `guest failed: ${r.markers.ERR ?? ''}\n${r.output.slice(-3000)}`)
  const data = readFileSync(img)
  assert.ok(data.subarray(0, 32 * MiB).every((x) => x === 0), 'the discarded half reads as zeros')
  assert.is(createHash('sha256').update(data.subarray(32 * MiB, 64 * MiB)).digest('hex'), r.markers.SUM, 'what the guest kept is there')
  const show = await vsm.json('disk', 'show', 'trim.img')
  // 64 MiB written, the discarded 32 MiB freed
  assert.is(show.allocated, 32 * MiB)
})

test.run()
