// The argument schemas of the one command table: every command has one, each refuses
// unknown fields and wrong types with EINVAL naming the field, and the name rules
// (no control characters or newlines; '@' only in DISK@SNAP) hold for every name.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { z } from 'zod'
import { VsmError } from '../src/block/blockdev'
import { COMMANDS, byName } from '../src/control/codes'
import { SCHEMAS, checkArgs } from '../src/control/schemas'

function refused(name: string, args: unknown, msg: RegExp) {
  try {
    checkArgs(byName(name)!, args)
  } catch (e) {
    assert.instance(e, VsmError)
    assert.is((e as VsmError).code, 'EINVAL')
    assert.match((e as Error).message, msg)
    assert.ok((e as Error).message.startsWith(`${name}: `), (e as Error).message)
    return
  }
  assert.unreachable(`${name} accepted ${JSON.stringify(args)}`)
}

/** The fields of a command's schema, optional ones unwrapped. */
function fields(schema: z.ZodType): Record<string, z.ZodType> {
  assert.instance(schema, z.ZodObject)
  const shape = (schema as z.ZodObject).shape as Record<string, z.ZodType>
  return Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, v instanceof z.ZodOptional ? v.unwrap() as z.ZodType : v]))
}

/** The schema of an extended command (standard ones have none: their argument is the binary struct). */
const schemaOf = (name: string): z.ZodType | undefined => (SCHEMAS as Record<string, z.ZodType>)[name]

test('every command in the table has a schema: JSON for extended commands, the binary struct for standard ones', () => {
  for (const c of COMMANDS) {
    if (c.standard) {
      assert.is(schemaOf(c.name), undefined, c.name)
      assert.throws(() => checkArgs(c, {}), /takes a binary argument/)
      continue
    }
    assert.ok(schemaOf(c.name) instanceof z.ZodType, `${c.name} has no argument schema`)
  }
  assert.equal(Object.keys(SCHEMAS).sort(), COMMANDS.filter((c) => !c.standard).map((c) => c.name).sort(), 'a schema for each extended command and nothing else')
})

test('every extended command refuses an unknown field, naming it first', () => {
  for (const c of COMMANDS) {
    if (c.standard || c.name === 'event') continue
    refused(c.name, { notAField: 1 }, new RegExp(`^${c.name.replace(/\./g, '\\.')}: unknown field 'notAField'`))
  }
  refused('event', {}, /sent by the server/)
})

/** Calls fn for each field of each extended command whose type is `kind`; returns how many there were. */
function eachField(kind: new (...a: any[]) => z.ZodType, fn: (command: string, field: string) => void): number {
  let n = 0
  for (const c of COMMANDS) {
    if (c.standard || c.name === 'event') continue
    for (const [k, f] of Object.entries(fields(schemaOf(c.name)!))) if (f instanceof kind) { n++; fn(c.name, k) }
  }
  return n
}

test('every flag of every command refuses the strings "false" and "true", and numbers', () => {
  const flags = eachField(z.ZodBoolean, (name, k) => {
    for (const bad of ['false', 'true', 0, 1]) refused(name, { [k]: bad }, new RegExp(`(: |; )${k} must be true or false, not ${JSON.stringify(bad)}`))
  })
  assert.ok(flags >= 5, `found ${flags} flags`)
})

test('names refuse control characters and newlines wherever a name is taken', () => {
  const bad = ['a\nb', 'a\rb', 'a\u0000b', 'a\u001b[31mb', 'a\u007fb', 'a\u0085b']
  const names = eachField(z.ZodString, (name, k) => {
    for (const b of bad) refused(name, { [k]: b }, new RegExp(`(: |; )${k} must (not contain control characters|be 1-64 of)`))
  })
  assert.ok(names >= 20, `found ${names} name fields`)
})

test("'@' is reserved for DISK@SNAP: refused in disk and snapshot names, taken where a snapshot is meant", () => {
  refused('disk.create', { path: 'a@b.img', size: 512 }, /path must not contain '@'/)
  refused('disk.resize', { path: 'a@b', size: 512 }, /path must not contain '@'/)
  refused('snapshot.create', { path: 'a.img', name: 'b@c' }, /name must not contain '\/' or '@'/)
  refused('disk.clone', { source: 'a.img@s', path: 'b@c.img' }, /path must not contain '@'/)
  assert.equal(checkArgs(byName('disk.clone')!, { source: 'a.img@s', path: 'b.img' }), { source: 'a.img@s', path: 'b.img' })
  assert.equal(checkArgs(byName('disk.compare')!, { a: 'a.img@s', b: '.snapshots/a.img/t' }), { a: 'a.img@s', b: '.snapshots/a.img/t' })
  refused('snapshot.create', { path: 'a.img', name: '..' }, /name must not be/)
  refused('snapshot.create', { path: 'a.img', name: 'x'.repeat(256) }, /name must be at most 255 characters long/)
})

test('numbers: whole, positive and in range', () => {
  refused('disk.create', { path: 'a', size: 0 }, /size must be more than 0, not 0/)
  refused('disk.create', { path: 'a', size: 1.5 }, /size must be a whole number, not 1\.5/)
  refused('disk.create', { path: 'a', size: '1M' }, /size must be a number, not "1M"/)
  refused('disk.create', { path: 'a', size: 2 ** 53 }, /size must be at most 9007199254740991/)
  refused('volume.create', { name: 'v', layout: 'mirror', devices: ['d0', 'd1'], size: 512, copies: 9 }, /copies must be at most 8, not 9/)
  refused('volume.create', { name: 'v', layout: 'raid9', devices: ['d0'], size: 512 }, /layout must be one of concat, stripe, mirror, raid10, raid5, not "raid9"/)
  refused('volume.create', { name: 'v', layout: 'mirror', devices: [], size: 512 }, /devices must be at least 1 entries/)
  refused('volume.create', { name: 'v', layout: 'mirror', devices: ['d0', 'x/y'], size: 512 }, /devices\[1\] must be 1-64 of/)
  refused('volume.grow', { name: 'v', size: 512, rate: -1 }, /rate must be more than 0/)
  refused('disk.freeze', { path: 'a', timeoutMs: 3_600_001 }, /timeoutMs must be at most 3600000/)
  refused('job.cancel', { id: 0 }, /id must be more than 0/)
  refused('job.wait', {}, /id is required \(or all: true\)/)
  refused('job.wait', { id: '3' }, /id must be a number, not "3"/)
})

test('accepted arguments come through unchanged; no payload is no arguments', () => {
  assert.equal(checkArgs(byName('disk.list')!, undefined), {})
  assert.equal(checkArgs(byName('disk.delete')!, { path: 'vm/a.img', force: false }), { path: 'vm/a.img', force: false })
  assert.equal(checkArgs(byName('job.wait')!, { all: true }), { all: true })
  assert.equal(checkArgs(byName('device.add')!, { name: 'd2', path: '/tmp/x y.img', size: 1 << 30, spare: true }),
    { name: 'd2', path: '/tmp/x y.img', size: 1 << 30, spare: true })
})

test.run()
