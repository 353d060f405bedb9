// `vsm down` with disks open: refused in one line naming them (the daemon, its mount and
// the open disk stay as they were) unless --force; a user that has just closed its disk
// does not count as open.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { ChildProcess, spawn } from 'child_process'
import { readFileSync } from 'fs'
import { join } from 'path'
import { makeVsm, RunError } from './helpers/daemon'
import { isMounted } from '../src/daemon/mounts'
import { processAlive } from '../src/cli/up'

const vsm = makeVsm({ deviceSize: '256M' })
const holders: ChildProcess[] = []
test.after(async () => {
  for (const h of holders) h.kill('SIGKILL')
  await vsm.cleanup()
})

/** A shell that opens the disk read-write on fd 3, writes a marker through it and keeps it open until killed. */
async function holdOpen(path: string): Promise<ChildProcess> {
  const child = spawn('sh', ['-c', 'exec 3<>"$1" && printf held >&3 && echo ready && exec sleep 600', 'sh', path], { stdio: ['ignore', 'pipe', 'inherit'] })
  holders.push(child)
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
    child.once('exit', (code) => reject(new Error(`holder exited with ${code}`)))
  })
  return child
}

async function stopHolder(child: ChildProcess) {
  const gone = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await gone
}

test('down is refused while a process has a disk open, naming it; the daemon and the disk carry on', async () => {
  await vsm.up()
  await vsm.run('disk', 'create', 'guest.img', '--size', '16M')
  await vsm.run('disk', 'create', 'idle.img', '--size', '16M')
  const img = join(vsm.mount, 'guest.img')
  const holder = await holdOpen(img)
  const pid = vsm.pid()
  const err = await vsm.down().then(() => null, (e: RunError) => e)
  assert.ok(err, 'down went ahead with a disk open')
  const msg = err!.stderr.trim()
  assert.is(msg.split('\n').length, 1, msg)
  assert.match(msg, /guest\.img/)
  assert.not.match(msg, /idle\.img/)
  assert.ok(processAlive(pid), 'the daemon stopped anyway')
  assert.ok(isMounted(vsm.mount), 'the view was unmounted anyway')
  assert.is(readFileSync(img).subarray(0, 4).toString(), 'held')
  assert.ok(processAlive(holder.pid!), 'the process holding the disk died')
  // once the user is gone, down goes ahead without --force
  await stopHolder(holder)
  await vsm.down()
  assert.not.ok(processAlive(pid))
  assert.not.ok(isMounted(vsm.mount))
})

test('down --force stops with a disk open', async () => {
  await vsm.up()
  const holder = await holdOpen(join(vsm.mount, 'guest.img'))
  const pid = vsm.pid()
  const out = await vsm.run('down', '--force')
  assert.match(out, /stopped/)
  assert.not.ok(processAlive(pid))
  assert.not.ok(isMounted(vsm.mount))
  await stopHolder(holder)
})

test('shutdown with a non-boolean force is refused (EINVAL) and changes nothing', async () => {
  await vsm.up()
  const err = await vsm.run('ctl', 'shutdown', '{"force":"false"}').then(() => null, (e: RunError) => e)
  assert.ok(err, 'shutdown accepted force="false"')
  assert.ok(processAlive(vsm.pid()))
  assert.ok(isMounted(vsm.mount))
})

test.run()
