// scripts/install-service: the unit it writes (into a temp dir, never enabled here)
// passes `systemd-analyze verify` without a warning, runs `vsm up --foreground` for the
// home with the extra options, and its stop signal (SIGTERM) flushes and unmounts;
// bad input is one line and writes nothing.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { spawnSync } from 'child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join, resolve } from 'path'
import { makeVsm } from './helpers/daemon'
import { startForeground } from './helpers/foreground'
import { isMounted } from '../src/daemon/mounts'

const SCRIPT = resolve(__dirname, '..', '..', 'scripts', 'install-service')
const vsm = makeVsm({ deviceSize: '1G' })
const dir = mkdtempSync(join(tmpdir(), 'vsm-unit-'))
test.after(async () => { await vsm.cleanup(); rmSync(dir, { recursive: true, force: true }) })

function install(...args: string[]) {
  return spawnSync(SCRIPT, args, { encoding: 'utf8' })
}

/** [section] → key → values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>()
  let sec: Map<string, string[]> | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (!line || line.startsWith('#')) continue
    const s = /^\[(\w+)\]$/.exec(line)
    if (s) { out.set(s[1], sec = new Map()); continue }
    const i = line.indexOf('=')
    assert.ok(sec && i > 0, `not a key=value line inside a section: ${line}`)
    const k = line.slice(0, i)
    sec!.set(k, [...(sec!.get(k) ?? []), line.slice(i + 1)])
  }
  return out
}

test('the unit verifies cleanly, names the home and runs vsm up --foreground with the extra options; nothing is enabled', () => {
  const r = install('--unit-dir', dir, '--home', vsm.home, '--', '--device-size', '1G', '--log-level', 'warn')
  assert.is(r.status, 0, r.stderr)
  assert.equal(readdirSync(dir), ['vsm.service'], 'only the unit: no wants/ links, no temp file')
  const file = join(dir, 'vsm.service')
  const unit = parseUnit(readFileSync(file, 'utf8'))
  const svc = unit.get('Service')!
  const argv = svc.get('ExecStart')![0].split(' ')
  assert.equal(argv.slice(1), [resolve(__dirname, '..', '..', 'bin', 'vsm'), 'up', '--foreground', '--home', vsm.home, '--device-size', '1G', '--log-level', 'warn'])
  assert.ok(argv[0].startsWith('/') && argv[0].endsWith('node'))
  assert.equal(svc.get('KillSignal'), ['SIGTERM'])
  assert.equal(svc.get('Environment'), [`VSM_HOME=${vsm.home}`])
  assert.equal(unit.get('Unit')!.get('RequiresMountsFor'), [vsm.home])
  assert.equal(unit.get('Install')!.get('WantedBy'), ['multi-user.target'])
  const analyze = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' })
  if (analyze.error) {
    console.log('systemd-analyze is not installed: the unit was checked by parsing only')
  } else {
    // verify exits 0 on a misparsed line and only warns: any output is a failure here
    assert.is(analyze.status, 0, analyze.stderr)
    assert.is(analyze.stderr.trim() + analyze.stdout.trim(), '')
  }
})

test("the unit's ExecStart brings the stack up in the foreground; its SIGTERM flushes and unmounts", async () => {
  const argv = parseUnit(readFileSync(join(dir, 'vsm.service'), 'utf8')).get('Service')!.get('ExecStart')![0].split(' ')
  const { child, out, exited } = await startForeground(vsm, argv)
  try {
    writeFileSync(join(vsm.mount, 'kept.txt'), 'kept\n')
    assert.ok(isMounted(vsm.mount))
    child.kill('SIGTERM')
    assert.is(await exited, 0)
    assert.not.ok(isMounted(vsm.mount))
    assert.not.ok(existsSync(join(vsm.home, 'vsm.pid')))
    // --log-level warn from the unit reached the daemon: no info lines on its stdout
    assert.ok(out().split('\n').filter(Boolean).every((l) => JSON.parse(l).level >= 40), out())
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  await vsm.up()
  assert.is(readFileSync(join(vsm.mount, 'kept.txt'), 'utf8'), 'kept\n')
})

test('bad input is one line on stderr and writes nothing', () => {
  const empty = mkdtempSync(join(tmpdir(), 'vsm-unit-bad-'))
  try {
    for (const args of [
      ['--home', 'relative/home'],
      ['--home', '/var/lib/with space'],
      ['--home', '/var/lib/100%'],
      ['--name', 'a/b'],
      ['--', '--foreground'],
      ['--', '--home', '/elsewhere'],
      ['--bogus'],
      ['--home'],
    ]) {
      const r = install('--unit-dir', empty, ...args)
      assert.is(r.status, 1, args.join(' '))
      assert.is(r.stderr.trim().split('\n').length, 1, r.stderr)
      assert.match(r.stderr, /^install-service: /)
      assert.equal(readdirSync(empty), [], args.join(' '))
    }
    const r = install('--unit-dir', join(empty, 'missing'))
    assert.is(r.status, 1)
  } finally {
    rmSync(empty, { recursive: true, force: true })
  }
})

test.run()
