// The command table and the wire codec: code layout, lookups, frame round trips
// under every chunking, and the errors that make the server drop a connection.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { VsmError } from '../src/block/blockdev'
import {
  COMMANDS, byCode, byName, ioc, iocDir, iocNr, iocSize, iocType, isStandard, lookup, macroName, parseCode, componentOf,
} from '../src/control/codes'
import {
  FrameDecoder, FrameError, HEADER_SIZE, MAGIC, decodeDiskIo, decodeJson, encodeDiskIo, encodeFrame, encodeHeader,
  encodeJson, errnoOf, errorFrame, errorFromFrame, Frame,
} from '../src/control/codec'
import { rng } from './helpers/conformance'

const codes = suite('control codes')

codes('layout is Linux _IOC: dir 30, size 16, type 8, nr 0', () => {
  // _IOWR('V', 0x10, 0) as the kernel computes it
  assert.is(ioc('readwrite', 'V', 0x10, 0), 0xc0005610)
  assert.is(ioc('write', 'V', 0x02, 16), (1 << 30 | 16 << 16 | 0x56 << 8 | 2) >>> 0)
  assert.is(ioc('none', 'S', 2, 0), 0x5302)
  const c = byName('disk.read')!
  assert.is(iocDir(c.code), 3)
  assert.is(iocSize(c.code), 16)
  assert.is(String.fromCharCode(iocType(c.code)), 'V')
  assert.is(iocNr(c.code), 1)
})

codes('the table is consistent: unique names, numbers and macros; the required commands exist', () => {
  const names = new Set(COMMANDS.map((c) => c.name))
  assert.is(names.size, COMMANDS.length)
  assert.is(new Set(COMMANDS.map((c) => c.code)).size, COMMANDS.length)
  assert.is(new Set(COMMANDS.map((c) => `${c.type}${c.nr}`)).size, COMMANDS.length)
  assert.is(new Set(COMMANDS.map(macroName)).size, COMMANDS.length)
  const required = [
    'hello', 'status', 'job.list', 'job.wait', 'job.cancel', 'events.subscribe', 'shutdown',
    'disk.read', 'disk.write', 'disk.flush', 'disk.discard', 'disk.size',
    'disk.create', 'disk.list', 'disk.show', 'disk.resize', 'disk.delete',
    'snapshot.create', 'snapshot.list', 'snapshot.revert', 'snapshot.delete', 'disk.clone',
    'fs.stat', 'fs.check',
    'device.add', 'device.list', 'device.remove',
    'volume.create', 'volume.list', 'volume.show', 'volume.grow', 'volume.move', 'volume.relayout', 'volume.replace', 'volume.scrub',
    'repl.create', 'repl.status', 'repl.pause', 'repl.resume', 'repl.verify', 'repl.takeover', 'repl.failback',
    'hsm.tier.add', 'hsm.policy.set', 'hsm.migrate', 'hsm.recall', 'hsm.pin', 'hsm.unpin', 'hsm.status',
  ]
  for (const n of required) assert.ok(names.has(n), `missing ${n}`)
  for (const c of COMMANDS) {
    assert.match(c.name, /^[a-z]+(\.[a-z]+)*$/)
    assert.ok(c.description.length > 0)
    assert.is(componentOf(c.code), c.type)
    assert.is(c.code, ioc(c.dir, c.type, c.nr, c.size))
  }
  const owner: Record<string, string> = { disk: 'V', snapshot: 'V', fs: 'F', device: 'L', volume: 'L', pool: 'L', repl: 'R', hsm: 'H', job: 'S', events: 'S' }
  for (const c of COMMANDS) {
    const prefix = c.name.split('.')[0]
    if (prefix in owner) assert.is(c.type, owner[prefix], c.name)
  }
})

codes('lookup by name and number, isStandard, parseCode', () => {
  const c = byName('disk.create')!
  assert.is(byCode(c.code), c)
  assert.is(lookup('disk.create'), c)
  assert.is(lookup(c.code), c)
  assert.throws(() => lookup('disk.explode'), (e: VsmError) => e.code === 'EINVAL')
  assert.throws(() => lookup(0x12345678), (e: VsmError) => e.code === 'EINVAL')
  assert.is(byCode(0xdeadbeef), undefined)
  for (const n of ['disk.read', 'disk.write', 'disk.flush', 'disk.discard', 'disk.size']) {
    assert.ok(isStandard(byName(n)!.code), n)
    assert.ok(isStandard(n), n)
  }
  assert.is(COMMANDS.filter((x) => x.standard).length, 5)
  assert.not.ok(isStandard(c.code))
  assert.not.ok(isStandard(0))
  assert.is(parseCode('disk.create'), c.code)
  assert.is(parseCode('0x' + c.code.toString(16)), c.code)
  assert.is(parseCode(String(c.code)), c.code)
  assert.throws(() => parseCode('nonsense'))
})

const codec = suite('control codec')

const frame = (payload: Buffer | string, id = 7, code = byName('disk.list')!.code, status = 0): Frame => ({
  code, id, status, payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
})

function same(a: Frame, b: Frame) {
  assert.is(a.code, b.code)
  assert.is(a.id, b.id)
  assert.is(a.status, b.status)
  assert.ok(a.payload.equals(b.payload), 'payload differs')
}

codec('header layout: magic, length, code, id, status, little-endian', () => {
  const b = encodeFrame(frame('abc', 0x01020304, 0xc0005610, -2))
  assert.is(b.length, HEADER_SIZE + 3)
  assert.is(b.subarray(0, 4).toString('latin1'), 'VSM1')
  assert.is(b.readUInt32LE(0), MAGIC)
  assert.is(b.readUInt32LE(4), 3)
  assert.is(b.readUInt32LE(8), 0xc0005610)
  assert.is(b.readUInt32LE(12), 0x01020304)
  assert.is(b.readInt32LE(16), -2)
})

codec('round trip: one frame, empty payload, many frames in one chunk', () => {
  const frames = [frame('{"a":1}', 1), frame(Buffer.alloc(0), 2), frame(randomBytes(70000), 3), frame('x', 0xffffffff, 0x80005300, -38)]
  const d = new FrameDecoder()
  const out = d.push(Buffer.concat(frames.map((f) => encodeFrame(f))))
  assert.is(out.length, frames.length)
  frames.forEach((f, i) => same(out[i], f))
  assert.is(d.buffered, 0)
  d.end()
})

codec('partial chunks: byte by byte and random splits give the same frames', () => {
  const frames = Array.from({ length: 20 }, (_, i) => frame(randomBytes(i * 37), i + 1))
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f)))
  const d1 = new FrameDecoder()
  const out1: Frame[] = []
  for (let i = 0; i < wire.length; i++) out1.push(...d1.push(wire.subarray(i, i + 1)))
  assert.is(out1.length, frames.length)
  frames.forEach((f, i) => same(out1[i], f))
  for (let seed = 1; seed <= 50; seed++) {
    const r = rng(seed)
    const d = new FrameDecoder()
    const out: Frame[] = []
    let off = 0
    while (off < wire.length) {
      const n = 1 + r(200)
      out.push(...d.push(wire.subarray(off, off + n)))
      off += n
    }
    assert.is(out.length, frames.length, `seed ${seed}`)
    frames.forEach((f, i) => same(out[i], f))
  }
})

codec('a large frame arriving in small reads is decoded once it is whole', () => {
  const big = frame(randomBytes(3 * 1024 * 1024), 9)
  const wire = encodeFrame(big)
  const d = new FrameDecoder()
  let out: Frame[] = []
  for (let off = 0; off < wire.length; off += 65536) {
    out = out.concat(d.push(wire.subarray(off, off + 65536)))
    if (off + 65536 < wire.length) assert.is(out.length, 0)
  }
  assert.is(out.length, 1)
  same(out[0], big)
})

codec('bad magic and oversized length are errors, and the decoder stays failed', () => {
  const bad = encodeFrame(frame('x'))
  bad.writeUInt32LE(0x12345678, 0)
  const d = new FrameDecoder()
  assert.throws(() => d.push(bad), (e: Error) => e instanceof FrameError && /magic/.test(e.message))
  assert.throws(() => d.push(encodeFrame(frame('fine'))), (e: Error) => e instanceof FrameError)

  const d2 = new FrameDecoder({ maxPayload: 1024 })
  const h = encodeHeader({ code: 1, id: 1, status: 0 }, 1025)
  assert.throws(() => d2.push(h), (e: Error) => e instanceof FrameError && /exceeds/.test(e.message))
  // exactly at the limit is fine
  const d3 = new FrameDecoder({ maxPayload: 1024 })
  assert.is(d3.push(encodeFrame(frame(Buffer.alloc(1024)))).length, 1)
  // the default limit is 16 MiB
  assert.throws(() => new FrameDecoder().push(encodeHeader({ code: 1, id: 1, status: 0 }, 16 * 1024 * 1024 + 1)), (e: Error) => e instanceof FrameError)
  assert.throws(() => encodeFrame(frame(Buffer.alloc(2048)), 1024), (e: VsmError) => e.code === 'E2BIG')
})

codec('frames complete before bad bytes are still returned, then the decoder is failed', () => {
  const good = [frame('a', 1), frame('b', 2)]
  const junk = Buffer.alloc(30, 0xee)
  const d = new FrameDecoder()
  const out = d.push(Buffer.concat([...good.map((f) => encodeFrame(f)), junk]))
  assert.is(out.length, 2)
  good.forEach((f, i) => same(out[i], f))
  assert.ok(d.error instanceof FrameError)
  assert.throws(() => d.push(Buffer.alloc(0)), (e: Error) => e instanceof FrameError)
  assert.throws(() => d.end(), (e: Error) => e instanceof FrameError)
})

codec('a stream ending inside a frame is reported by end()', () => {
  const d = new FrameDecoder()
  d.push(encodeFrame(frame('abcdef')).subarray(0, 23))
  assert.throws(() => d.end(), (e: Error) => e instanceof FrameError && /ended inside a frame/.test(e.message))
  const d2 = new FrameDecoder()
  d2.push(Buffer.from('VSM'))
  assert.throws(() => d2.end(), (e: Error) => e instanceof FrameError)
})

codec('JSON and error payloads', () => {
  assert.is(encodeJson(undefined).length, 0)
  assert.is(decodeJson(Buffer.alloc(0)), undefined)
  assert.equal(decodeJson(encodeJson({ a: [1, 'b'] })), { a: [1, 'b'] })
  assert.throws(() => decodeJson(Buffer.from('{nope')), (e: VsmError) => e.code === 'EINVAL')
  const f = errorFrame(3, 0xc0005610, 'ENOENT', 'no disk a.img')
  assert.is(f.status, -errnoOf('ENOENT'))
  assert.ok(f.status < 0)
  const e = errorFromFrame(f)
  assert.is(e.code, 'ENOENT')
  assert.is(e.message, 'no disk a.img')
  // a name the OS does not know still travels by name; the status falls back to EIO
  const g = errorFrame(3, 1, 'EBADNAME', 'bad name')
  assert.is(g.status, -errnoOf('EIO'))
  assert.is(errorFromFrame(g).code, 'EBADNAME')
  // a reply with an unreadable body still maps its status
  assert.is(errorFromFrame({ code: 1, id: 1, status: -errnoOf('ENOSPC'), payload: Buffer.from('garbage') }).code, 'ENOSPC')
})

codec('disk io argument: round trip and validation', () => {
  const data = randomBytes(1000)
  const w = decodeDiskIo(encodeDiskIo({ path: 'vm/disk é.img', offset: 2 ** 40 }, data), true)
  assert.is(w.path, 'vm/disk é.img')
  assert.is(w.offset, 2 ** 40)
  assert.is(w.length, 1000)
  assert.ok(w.data.equals(data))
  const r = decodeDiskIo(encodeDiskIo({ path: 'a.img', offset: 512, length: 4096 }), false)
  assert.equal([r.path, r.offset, r.length, r.data.length], ['a.img', 512, 4096, 0])
  const bad = (b: Buffer, withData = false) => assert.throws(() => decodeDiskIo(b, withData), (e: VsmError) => e.code === 'EINVAL')
  bad(Buffer.alloc(5))
  const h = encodeDiskIo({ path: 'a.img', length: 10 })
  const noPath = Buffer.from(h); noPath.writeUInt32LE(0, 12); bad(noPath)
  const longPath = Buffer.from(h); longPath.writeUInt32LE(100, 12); bad(longPath)
  const hugeOffset = Buffer.from(h); hugeOffset.writeBigUInt64LE(2n ** 63n, 0); bad(hugeOffset)
  bad(Buffer.concat([h, Buffer.from('extra')]))
  bad(encodeDiskIo({ path: 'a.img', length: 10 }), true) // write claims 10 bytes, carries none
  bad(encodeDiskIo({ path: 'a\0b' }))
  assert.throws(() => encodeDiskIo({ path: '' }), (e: VsmError) => e.code === 'EINVAL')
  assert.throws(() => encodeDiskIo({ path: 'a', offset: -1 }), (e: VsmError) => e.code === 'EINVAL')
})

codes.run()
codec.run()
