// A disk changed through the control socket (a revert, a resize, a delete; a snapshot
// deleted) while the kernel holds what it cached of it: pages a reader read,
// attributes, the name's entry. The command's answer must mean the view shows the
// change: before, a reader kept reading the contents from before a revert through its
// open descriptor (for as long as it kept it open), and for a second stat showed the
// size from before a resize, or the deleted disk's (or snapshot's) size for a new one
// made under its name. The native binding drops those caches (FUSE notify) before the
// command answers; fuse-native (libfuse2's high-level API, no notify) cannot, which the
// README says.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { closeSync, openSync, readSync, statSync, writeSync, fsyncSync } from 'fs'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G', fuse: 'native' })
test.after(() => vsm.cleanup())
test.before(() => vsm.up())

const MiB = 1 << 20

function writeAt(path: string, fill: number, pos = 0): void {
  const fd = openSync(path, 'r+')
  try {
    writeSync(fd, Buffer.alloc(4096, fill), 0, 4096, pos)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

function byteAt(fd: number, pos: number): number {
  const b = Buffer.alloc(4096)
  readSync(fd, b, 0, 4096, pos)
  return b[0]
}

test('[native] a reader holding a disk open reads the snapshot contents once a revert has answered', async () => {
  await vsm.run('disk', 'create', 'r.img', '--size', '4M')
  const disk = join(vsm.mount, 'r.img')
  writeAt(disk, 0x41)
  await vsm.run('snapshot', 'create', 'r.img', 's1')
  writeAt(disk, 0x42)
  const fd = openSync(disk, 'r')
  try {
    assert.is(byteAt(fd, 0), 0x42) // now in the kernel's page cache
    await vsm.run('snapshot', 'revert', 'r.img', 's1')
    assert.is(byteAt(fd, 0), 0x41, 'the open descriptor reads what the disk holds after the revert')
  } finally {
    closeSync(fd)
  }
})

test('[native] stat shows a resize at once', async () => {
  await vsm.run('disk', 'create', 'z.img', '--size', '4M')
  const disk = join(vsm.mount, 'z.img')
  for (const size of [5, 6, 3]) {
    assert.ok(statSync(disk).size > 0) // the kernel caches the attributes for a second
    await vsm.run('disk', 'resize', 'z.img', `${size}M`, ...(size === 3 ? ['--shrink'] : []))
    assert.is(statSync(disk).size, size * MiB)
  }
})

test('[native] a disk deleted and made again under its name is the new disk at once', async () => {
  await vsm.run('disk', 'create', 'n.img', '--size', '8M')
  const disk = join(vsm.mount, 'n.img')
  writeAt(disk, 0x43, 4 * MiB)
  assert.is(statSync(disk).size, 8 * MiB)
  await vsm.run('disk', 'delete', 'n.img')
  await vsm.run('disk', 'create', 'n.img', '--size', '2M')
  const st = statSync(disk)
  assert.is(st.size, 2 * MiB)
  const fd = openSync(disk, 'r')
  try {
    assert.is(byteAt(fd, 0), 0, 'the new disk reads as zeros')
    assert.is(readSync(fd, Buffer.alloc(4096), 0, 4096, 4 * MiB), 0, 'nothing past the new end')
  } finally {
    closeSync(fd)
  }
})

test('[native] a snapshot deleted and taken again under its name shows the new one at once in .snapshots', async () => {
  await vsm.run('disk', 'create', 'v.img', '--size', '4M')
  const view = join(vsm.mount, '.snapshots', 'v.img', 's')
  await vsm.run('snapshot', 'create', 'v.img', 's')
  assert.is(statSync(view).size, 4 * MiB)
  await vsm.run('snapshot', 'delete', 'v.img', 's')
  await vsm.run('disk', 'resize', 'v.img', '6M')
  await vsm.run('snapshot', 'create', 'v.img', 's')
  assert.is(statSync(view).size, 6 * MiB)
})

test.run()
