// A disk in the FUSE view as a kernel block device: losetup, mkfs.ext4, mount, write
// files, unmount, e2fsck -fn clean; after a daemon restart the files are intact;
// once per FUSE binding.
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { randomBytes, createHash } from 'crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'fs'
import { join } from 'path'
import { makeVsm, perBinding } from './helpers/daemon'

perBinding('loop device', (test, fuse) => {
  const vsm = makeVsm({ deviceSize: '2G', fuse })
  const sh = (cmd: string, ...args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim()
  const mnt = join(vsm.home, 'ext4')
  let loop = ''

  function detach() {
    try { sh('umount', mnt) } catch { /* not mounted */ }
    if (loop) { try { sh('losetup', '-d', loop) } catch { /* gone */ } loop = '' }
  }

  test.after(async () => { detach(); await vsm.cleanup() })

  test('ext4 on a loop device over a vsm disk: fsck clean, contents kept across a restart', async () => {
    await vsm.up()
    await vsm.run('disk', 'create', 'ext.img', '--size', '512M')
    const img = join(vsm.mount, 'ext.img')
    mkdirSync(mnt)
    loop = sh('losetup', '-f', '--show', img)
    sh('mkfs.ext4', '-q', '-F', loop)
    sh('mount', loop, mnt)
    const sums = new Map<string, string>()
    for (let i = 0; i < 20; i++) {
      const data = randomBytes(1024 * (1 + i * 97))
      writeFileSync(join(mnt, `f${i}`), data)
      sums.set(`f${i}`, createHash('sha256').update(data).digest('hex'))
    }
    sh('sync')
    detach()
    loop = sh('losetup', '-f', '--show', '-r', img)
    sh('e2fsck', '-fn', loop)
    detach()
    await vsm.down()
    await vsm.up()
    loop = sh('losetup', '-f', '--show', '-r', img)
    sh('e2fsck', '-fn', loop)
    sh('mount', '-o', 'ro', loop, mnt)
    for (const [name, sum] of sums) assert.is(createHash('sha256').update(readFileSync(join(mnt, name))).digest('hex'), sum, name)
  })
})
