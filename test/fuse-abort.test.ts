// An administrator aborts the view's FUSE connection (/sys/fs/fuse/connections/N/abort,
// what one does to a FUSE mount that hangs) while a writer has 16 writes in flight. The
// kernel then sends no RELEASE for the files open on it: before, the daemon kept them
// open for ever (`vsm down` refused: "disks are open"), libfuse's unmount skipped the
// dead mount (`down --force` left it behind), and the view stayed dead until a restart.
// Now the native binding's session is torn down once its requests are answered (early
// answers under way included), the dead mount is detached, the files released, and the
// view mounted afresh. The fuse-native binding (the fallback), whose libfuse2 loop ends
// without telling anyone, gets the same from its watch on the mount (before, it stayed
// dead: "timed out waiting for the view mounted again"). A view unmounted from outside
// (fusermount -u) comes back the same way on both.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawn } from 'child_process'
import { randomBytes } from 'crypto'
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, statSync, writeFileSync, writeSync } from 'fs'
import { join } from 'path'
import { makeVsm, until, type Vsm } from './helpers/daemon'
import { FUSE_BINDINGS } from '../src/virtualizer/fuse-view'

const CONNECTIONS = '/sys/fs/fuse/connections'
let vsm: Vsm | undefined
/** fusectl mounted here, to be unmounted after. */
let ourFusectl = false
test.after(async () => {
  await vsm?.cleanup()
  if (ourFusectl) execFileSync('umount', [CONNECTIONS])
})

/** fusectl is where aborts are made; it is not always mounted (containers). */
function fusectl(): boolean {
  if (readFileSync('/proc/mounts', 'utf8').includes(` ${CONNECTIONS} fusectl `)) return true
  try {
    execFileSync('mount', ['-t', 'fusectl', 'fusectl', CONNECTIONS], { stdio: 'ignore' })
    return (ourFusectl = true)
  } catch {
    return false
  }
}

const mounted = (path: string) => readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === path)
const events = (home: string) => readFileSync(join(home, 'log', 'vsm.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).event)


const run = fusectl() ? test : test.skip
for (const binding of FUSE_BINDINGS) run(`[${binding}] an aborted connection under queued writes: files released, dead mount detached, view mounted again, down leaves nothing`, async () => {
  await vsm?.cleanup()
  vsm = makeVsm({ deviceSize: '1G', fuse: binding })
  await vsm.up()
  await vsm.run('disk', 'create', 'd.img', '--size', '16M')
  const disk = join(vsm.mount, 'd.img')
  const keep = randomBytes(1 << 20)
  const fd = openSync(disk, 'r+') // not writeFileSync: its O_TRUNC would leave fio a 1 MiB file to lay out again
  try { writeSync(fd, keep, 0, keep.length, 0); fsyncSync(fd) } finally { closeSync(fd) }

  // fio's writes go to the second MiB on; the first keeps the data written above
  const fio = spawn('fio', ['--name=w', `--filename=${disk}`, '--rw=randwrite', '--bs=4k', '--direct=1', '--ioengine=libaio',
    '--iodepth=16', '--offset=1M', '--size=15M', '--runtime=30', '--time_based'], { stdio: 'ignore' })
  const fioDone = new Promise<number | null>((res) => fio.on('exit', (code) => res(code)))
  try {
    await new Promise((r) => setTimeout(r, 1500))
    const dev = statSync(vsm.mount).dev
    const conn = String((dev & 0xff) | ((dev >> 12) & 0xfff00)) // a connection is named by its mount's minor device number
    assert.ok(existsSync(join(CONNECTIONS, conn)), `no FUSE connection ${conn} in ${readdirSync(CONNECTIONS).join(' ')}`)
    writeFileSync(join(CONNECTIONS, conn, 'abort'), '1')
    assert.is.not(await fioDone, 0, 'fio went on writing through an aborted connection')

    await until('the view mounted again', () => events(vsm!.home).includes('fuse.remounted'), 20_000)
    const ev = events(vsm.home)
    assert.ok(ev.includes('fuse.connection-lost'), ev.join(' '))
    assert.ok(readFileSync(disk).subarray(0, keep.length).equals(keep), 'the data written before the abort reads back')

    await vsm.down() // refused before ("disks are open": the aborted handle was never released)
    assert.not.ok(mounted(vsm.mount), 'a mount was left behind')
  } finally {
    fio.kill('SIGKILL')
  }
})

for (const binding of FUSE_BINDINGS) test(`[${binding}] a view unmounted from outside (fusermount -u) comes back; down leaves nothing`, async () => {
  await vsm?.cleanup()
  vsm = makeVsm({ deviceSize: '1G', fuse: binding })
  await vsm.up()
  await vsm.run('disk', 'create', 'u.img', '--size', '8M')
  const data = randomBytes(1 << 20)
  const fd = openSync(join(vsm.mount, 'u.img'), 'r+')
  try { writeSync(fd, data, 0, data.length, 0); fsyncSync(fd) } finally { closeSync(fd) }
  execFileSync('fusermount', ['-u', vsm.mount])
  await until('the view mounted again', () => events(vsm!.home).includes('fuse.remounted'), 20_000)
  assert.ok(events(vsm.home).includes('fuse.connection-lost'))
  assert.ok(readFileSync(join(vsm.mount, 'u.img')).subarray(0, data.length).equals(data), 'the disk is there again, with its data')
  await vsm.down()
  assert.not.ok(mounted(vsm.mount), 'a mount was left behind')
})

test.run()
