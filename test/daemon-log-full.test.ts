// The daemon's log directory on a file system that fills up (a tmpfs of 64 KiB mounted
// at <home>/log: the real ENOSPC). Before, the first log line that did not fit became an
// uncaught 'error' of pino's destination, and the exception handler's flushSync retried
// that write for ever, asleep on the main thread: a guest's writes hung, `vsm status`
// never answered and only kill -9 ended the daemon. Now the daemon serves on, says so
// (event daemon.log-failing), writes the lines it kept once there is room (with
// daemon.log-recovered), and stops cleanly on a full log too; a start that fails then
// says its reason was lost to the full file system.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync } from 'child_process'
import { appendFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'fs'
import { join } from 'path'
import { VSM, makeVsm, until } from './helpers/daemon'

const vsm = makeVsm({ deviceSize: '1G' })
const logDir = join(vsm.home, 'log')
const filler = join(logDir, 'filler')
let mounted = false

test.after(async () => {
  try { await vsm.run('down') } catch { /* not running */ }
  try { vsm.kill9() } catch { /* no pid file: not running */ }
  if (mounted) execFileSync('umount', [logDir])
  await vsm.cleanup()
})

/** A CLI call that must answer within ms (a hung daemon otherwise hangs the test). */
const cli = (ms: number, ...args: string[]) => execFileSync(VSM, [...args, '--home', vsm.home], { encoding: 'utf8', timeout: ms })

/** No room left for another log line: the log's own last page (tmpfs allocates pages) filled with newlines, then a filler. */
function fill(): void {
  const size = statSync(join(logDir, 'vsm.log')).size
  if (size % 4096) appendFileSync(join(logDir, 'vsm.log'), '\n'.repeat(4096 - (size % 4096)))
  try { for (;;) writeFileSync(filler, Buffer.alloc(4096), { flag: 'a' }) } catch (e) { assert.is((e as NodeJS.ErrnoException).code, 'ENOSPC') }
}


test('a full log file system: the daemon serves on, writes its lines once there is room, and stops cleanly', async () => {
  mkdirSync(logDir, { recursive: true, mode: 0o700 })
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', logDir])
  mounted = true
  await vsm.up()
  fill()
  cli(15_000, 'disk', 'create', 'a.img', '--size', '16M')
  execFileSync('dd', ['if=/dev/urandom', `of=${join(vsm.mount, 'a.img')}`, 'bs=1M', 'count=8', 'oflag=direct', 'conv=fsync,notrunc', 'status=none'], { timeout: 30_000 })
  assert.match(cli(15_000, 'status'), /a\.img|1 disk/)
  rmSync(filler)
  const log = () => readFileSync(join(logDir, 'vsm.log'), 'utf8')
  await until('the log written again', () => log().includes('daemon.log-recovered'))
  for (const e of ['disk.created', 'daemon.log-failing']) assert.ok(log().includes(`"event":"${e}"`), `${e} in the log`)
  fill()
  cli(60_000, 'disk', 'create', 'b.img', '--size', '16M')
  cli(90_000, 'down')
  assert.throws(() => process.kill(vsm.pid(), 0), 'the daemon is gone')
  // a start that fails while the log is full: its reason is lost, and vsm up says why
  const pool = join(vsm.home, 'pool.json')
  const kept = readFileSync(pool)
  writeFileSync(pool, 'not json')
  try {
    assert.throws(() => execFileSync(VSM, ['up', '--home', vsm.home], { encoding: 'utf8', stdio: 'pipe', timeout: 60_000 }),
      (e: { stderr: string }) => /could not be written to .*daemon\.err: the file system holding it is full/.test(e.stderr))
  } finally {
    writeFileSync(pool, kept)
  }
})

test.run()
