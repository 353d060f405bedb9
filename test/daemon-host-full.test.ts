// The whole home on a file system that fills up (a 96 MiB tmpfs; the device files are
// thin, and vsm up says at once that they may outgrow it): a raid5 volume loses two members to ENOSPC in the same rows, the fs's next
// commit fails and the fs stops serving. `vsm status` must still answer and say so:
// before, it failed itself ("fs unusable after an I/O error"), so the operator saw
// nothing. Then room comes back and a restart serves the fs again.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawnSync } from 'child_process'
import { join } from 'path'
import { VSM, makeVsm } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '64M' })
let mounted = false
test.after(async () => {
  try { execFileSync(VSM, ['down', '--force', '--home', vsm.home], { stdio: 'ignore', timeout: 90_000 }) } catch { /* not running */ }
  try { vsm.kill9() } catch { /* no pid file */ }
  if (mounted) execFileSync('umount', [vsm.home])
  await vsm.cleanup()
})

const cli = (...args: string[]) => execFileSync(VSM, [...args, '--home', vsm.home], { encoding: 'utf8', timeout: 60_000 })

test('a full home stops the fs: status still answers and says what to do; with room again a restart serves it', async () => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=96m,mode=0700', 'tmpfs', vsm.home])
  mounted = true
  // two 64 MiB device files on 96 MiB: said at once
  assert.match(await vsm.run('up', '--device-size', '64M'), /vsm up: .*\nneeds attention:\n  file system of .*devices: device files d0, d1 may still grow by/)
  for (const d of ['r0', 'r1', 'r2']) cli('device', 'add', d, join(vsm.home, 'devices', `${d}.img`), '--size', '48M')
  cli('volume', 'create', 'r5', '--layout', 'raid5', '--devices', 'r0,r1,r2', '--size', '64M')
  cli('fs', 'add-volume', 'r5')
  cli('disk', 'create', 'a.img', '--size', '60M', '--volume', 'r5')
  const dd = spawnSync('dd', ['if=/dev/urandom', `of=${join(vsm.mount, 'a.img')}`, 'bs=1M', 'count=60', 'oflag=direct', 'conv=notrunc'], { encoding: 'utf8', timeout: 60_000 })
  assert.match(dd.stderr, /error writing/, 'the writes ran out of room')
  // a commit: the raid5 volume cannot be flushed, and the fs stops
  assert.throws(() => cli('disk', 'create', 'b.img', '--size', '1M'))
  const st = cli('status')
  assert.match(st, /fs {5}unusable: /)
  assert.match(st, /file system: serves nothing more: .*\n {4}fix: remedy the cause, then vsm down --force; vsm up/)
  assert.match(st, /file system of .*devices: device files .* may still grow by/)
  cli('down', '--force')
  // room again: the devices' holes that took the data are there; what the tmpfs lacked was space
  execFileSync('mount', ['-o', 'remount,size=512m', vsm.home])
  await vsm.up()
  assert.match(cli('status'), /fs {5}\S+ used of/)
  cli('disk', 'create', 'c.img', '--size', '1M')
})

test.run()
