// The CLI's help, read the way a new user reads it: every command and subcommand has
// a description, and the top-level help explains the size units. No daemon needed.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawn } from 'child_process'
import { VSM } from './helpers/daemon'

const help = (...args: string[]) => execFileSync(VSM, [...args, '--help'], { encoding: 'utf8' })

/** The entries under "Commands:" as [name, description] (descriptions may wrap onto indented lines). */
function commands(text: string): Array<[string, string]> {
  const lines = text.split('\n')
  const start = lines.indexOf('Commands:')
  if (start < 0) return []
  const out: Array<[string, string]> = []
  for (const l of lines.slice(start + 1)) {
    if (!l.startsWith('  ')) break
    const m = /^  (\S+)(?: \S+)*?(?:  +(.*))?$/.exec(l)
    if (/^ {4,}/.test(l) && out.length) { out[out.length - 1][1] += ' ' + l.trim(); continue }
    if (m) out.push([m[1], (m[2] ?? '').trim()])
  }
  return out
}

test('every command and every subcommand has a description', () => {
  const top = commands(help())
  assert.ok(top.length >= 10, `top-level commands: ${top.map((c) => c[0]).join(' ')}`)
  const missing: string[] = []
  for (const [name, desc] of top) {
    if (name === 'help') continue
    if (!desc) missing.push(name)
    for (const [sub, subDesc] of commands(help(name))) if (sub !== 'help' && !subDesc) missing.push(`${name} ${sub}`)
  }
  assert.equal(missing, [], `without a description: ${missing.join(', ')}`)
})

test('the help explains the size units', () => {
  assert.match(help(), /K, M, G or T in powers of 1024/)
})

test('output into a pipe its reader closed (vsm --help | head -1) ends quietly with status 0', async () => {
  const child = spawn(VSM, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.destroy()
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  const code = await new Promise((res) => child.on('close', res))
  assert.is(stderr, '')
  assert.is(code, 0)
})

test.run()
