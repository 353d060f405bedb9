// The native binding's early answer (native/ack.h, WriteAck): an overwrite of a disk's
// mapped blocks on the default mirror is answered by the thread pool thread that writes
// its last copy, and never when a copy fails: the mirror must record the failed copy
// before the write is acknowledged, so a write answered after one copy failed finds the
// member failed already. The copy is made to fail for real: chattr +i on its backing
// file makes ext4 refuse every write to it (EPERM), the descriptor open or not.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { randomBytes } from 'crypto'
import { closeSync, openSync, readSync } from 'fs'
import { join } from 'path'
import { makeVsm, type Vsm } from './helpers/daemon'

let vsm: Vsm
const locked: string[] = []
test.after(async () => {
  for (const f of locked) execFileSync('chattr', ['-i', f])
  await vsm?.cleanup()
})

const BS = 4096
/** O_DIRECT writes of the guest's kind, through dd (Node's buffers are not aligned for O_DIRECT). */
function ddWrite(file: string, data: Buffer, block: number) {
  execFileSync('dd', [`of=${file}`, `bs=${BS}`, `seek=${block}`, 'oflag=direct', 'conv=notrunc', 'status=none'], { input: data })
}
function readBlock(file: string, block: number): Buffer {
  const b = Buffer.alloc(BS)
  const fd = openSync(file, 'r')
  try { readSync(fd, b, 0, BS, block * BS) } finally { closeSync(fd) }
  return b
}
const early = async () => (await vsm.json('status')).fuseEarlyWrites as number

test('overwrites of mapped blocks are answered early; a write one copy of which fails is not, and finds that copy failed', async () => {
  vsm = makeVsm({ deviceSize: '1G' })
  await vsm.up()
  await vsm.run('disk', 'create', 'd.img', '--size', '4M')
  const disk = join(vsm.mount, 'd.img')
  const blocks = 1024
  ddWrite(disk, randomBytes(blocks * BS), 0) // allocating writes: answered by JavaScript, after their `ex`
  const e0 = await early()
  const data = randomBytes(64 * BS)
  for (let i = 0; i < 64; i++) ddWrite(disk, data.subarray(i * BS, (i + 1) * BS), 7 * i)
  const e1 = await early()
  assert.ok(e1 - e0 >= 32, `${e1 - e0} of 64 overwrites answered early`)
  for (let i = 0; i < 64; i++) assert.ok(readBlock(disk, 7 * i).equals(data.subarray(i * BS, (i + 1) * BS)), `block ${7 * i}`)

  const backing = join(vsm.home, 'devices', 'd1.img')
  execFileSync('chattr', ['+i', backing])
  locked.push(backing)
  const last = randomBytes(BS)
  ddWrite(disk, last, 100) // one copy lands, the other gets EPERM: the write succeeds on the mirror
  const e2 = await early()
  assert.is(e2, e1, 'the write with a failed copy was answered early')
  const vol = (await vsm.json('status')).volumes.find((v: any) => v.name === 'vol0')
  assert.is.not(vol.state, 'healthy', 'the failed copy was not recorded')
  assert.ok(readBlock(disk, 100).equals(last))
})

test.run()
