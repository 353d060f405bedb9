// vsm repl set on a running group, over a real OpenSSH sshd on 127.0.0.1: bad changes
// are refused in one line and change nothing; with the secondary killed -9 an fsync in
// async mode returns, after --mode sync it waits, and --mode async releases it; in sync
// mode again an fsync waits until the secondary is back and holds it; the new mode and
// rate survive a restart of the primary.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawn } from 'child_process'
import { join } from 'path'
import { type RunError } from './helpers/daemon'
import { replCreate, sitePair, upWithDisk } from './helpers/repl-sites'

const { primary, secondary, sshd, until } = sitePair(test, 'set')
const status = async () => (await primary.json('repl', 'status', 'g'))[0]

async function refused(args: string[], why: RegExp): Promise<void> {
  try { await primary.run('repl', 'set', 'g', ...args) } catch (e) {
    const err = (e as RunError).stderr.trim()
    assert.match(err, why)
    assert.is(err.split('\n').length, 1, err)
    return
  }
  assert.unreachable(`vsm repl set g ${args.join(' ')} was accepted`)
}

/** A 64 KiB write and fsync of the disk by another process: resolves when that fsync returned. */
function fsyncWrite(img: string): { done: Promise<number>; finished: () => boolean } {
  let finished = false
  const p = spawn('dd', ['if=/dev/urandom', `of=${img}`, 'bs=64k', 'count=1', 'conv=notrunc,fsync', 'status=none'], { stdio: 'ignore' })
  const done = new Promise<number>((r) => p.on('exit', (code) => { finished = true; r(code ?? -1) }))
  return { done, finished: () => finished }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** p's value, or 'still waiting' after ms: a test that fails instead of hanging. */
const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => 'still waiting')])

test('mode and rate change on a running group: flushes wait or not as the new mode says', async () => {
  await upWithDisk(primary, secondary, 'd.img', '8M')
  const img = join(primary.mount, 'd.img')
  await replCreate(primary, secondary, sshd(), 'g', '--mode', 'async', '--log-size', '16M')
  await until('the initial sync', status, (s) => s.state === 'replicating' && s.lagBytes === 0)

  await refused([], /nothing to change/)
  await refused(['--mode', 'fast'], /mode/)
  await refused(['--rate', '1K'], /at least 64K/)
  await refused(['--sync-timeout', '5'], /goes with --mode sync-fallback/)
  const before = await status()
  assert.equal([before.mode, before.rate], ['async', null], 'a refused change changes nothing')

  secondary.kill9()
  const w1 = fsyncWrite(img)
  assert.is(await within(w1.done, 10_000), 0, 'async: an fsync returns without the secondary')

  await primary.run('repl', 'set', 'g', '--mode', 'sync')
  const w2 = fsyncWrite(img)
  await sleep(2000)
  assert.not.ok(w2.finished(), 'sync: the fsync waits for the secondary')
  assert.is((await primary.json('repl', 'set', 'g', '--mode', 'async')).mode, 'async')
  assert.is(await within(w2.done, 10_000), 0, 'back to async: the waiting fsync returns')

  await primary.run('repl', 'set', 'g', '--mode', 'sync', '--rate', '4M')
  const w3 = fsyncWrite(img)
  await sleep(1000)
  assert.not.ok(w3.finished())
  await secondary.up('--secondary')
  assert.is(await within(w3.done, 90_000), 0, 'the fsync returns once the secondary is back')
  await until('the secondary caught up', status, (s) => s.state === 'replicating' && s.lagBytes === 0)

  await primary.down()
  await primary.up()
  const after = await status()
  assert.equal([after.mode, after.rate], ['sync', 4 << 20], 'the change survives a restart')
  assert.is((await primary.json('repl', 'set', 'g', '--rate', '0')).rate, null, '--rate 0 lifts the limit')
})

test.run()
