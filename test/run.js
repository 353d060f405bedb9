#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) in its own process, so a
// crash or a hung mount in one cannot take the others down, and ends with the one
// line CI reads: "N passed, N failed, N skipped". Exit status is non-zero on any failure.
// Usage: node test/run.js [substring ...]   (only files whose path under dist/test contains one of them)
'use strict'
const { spawnSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const root = path.join(__dirname, '..', 'dist', 'test')
const filters = process.argv.slice(2)
const perFileTimeoutMs = Number(process.env.VSM_TEST_TIMEOUT_MS || 15 * 60 * 1000)

function list(dir) {
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? list(p) : e.name.endsWith('.test.js') ? [p] : []
  })
}

// Cheap unit tests first, then the ones that mount, boot guests or run sshd.
const order = (f) => (/guest|vm/.test(f) ? 3 : /fuse|daemon|crash|loop|cli/.test(f) ? 2 : 1)
const files = list(root)
  .filter((f) => filters.length === 0 || filters.some((s) => path.relative(root, f).includes(s)))
  .sort((a, b) => order(a) - order(b) || a.localeCompare(b))

/** Test daemons and mounts live under homes named vsm-test-<runner pid>-*; any left after a file is a leak. */
const tag = `vsm-test-${process.pid}-`
function sweepLeaks() {
  const leaks = []
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd = ''
    try { cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ') } catch { continue }
    if (cmd.includes(' up --foreground ') && cmd.includes(tag)) { leaks.push(`daemon ${pid}`); try { process.kill(Number(pid), 'SIGKILL') } catch {} }
  }
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const mnt = line.split(' ')[1] || ''
    if (mnt.includes(tag)) { leaks.push(`mount ${mnt}`); spawnSync('fusermount', ['-uz', mnt]); spawnSync('umount', ['-l', mnt]) }
  }
  return leaks
}

let passed = 0, failed = 0, skipped = 0
const failures = []
for (const file of files) {
  const rel = path.relative(root, file)
  const t0 = Date.now()
  const r = spawnSync(process.execPath, [file], {
    encoding: 'utf8', timeout: perFileTimeoutMs, killSignal: 'SIGKILL',
    // every fs checkpoint also checked against the whole state (src/fs/state.ts STATE_CHECK)
    env: { VSM_FS_STATE_VERIFY: '1', ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', VSM_RUNNER_ID: String(process.pid) }, maxBuffer: 64 << 20,
  })
  const out = (r.stdout || '') + (r.stderr || '')
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '')
  const num = (label) => { const m = plain.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm')); return m ? Number(m[1]) : null }
  const total = num('Total'), ok = num('Passed'), skip = num('Skipped') || 0
  // uvu's Total counts the tests that ran: skipped ones are not in it
  let f = total === null ? 1 : total - ok
  if (r.status !== 0 && f === 0) f = 1 // exited badly after its tests: count the file as a failure
  passed += ok || 0; skipped += skip; failed += f
  const leaks = sweepLeaks()
  if (leaks.length) console.log(`LEAK ${rel} left behind: ${leaks.join(', ')} (cleaned up)`)
  const secs = ((Date.now() - t0) / 1000).toFixed(1)
  console.log(`${f ? 'FAIL' : 'ok  '} ${rel} (${ok || 0} passed, ${f} failed, ${skip} skipped, ${secs}s)`)
  if (f) { failures.push(rel); console.log(plain.split('\n').map((l) => '    ' + l).join('\n')) }
  else if (process.env.VSM_TEST_VERBOSE) console.log(plain)
}
if (failures.length) console.log(`failed files: ${failures.join(', ')}`)
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed || files.length === 0 ? 1 : 0)
