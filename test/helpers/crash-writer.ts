// A writer process for the crash tests: writes whole slots of a disk image with
// versioned contents, fsyncs each, and journals (outside the mount, fsync'd) what it
// tried and what was acknowledged, until the mount dies under it; and the verifier.
import { closeSync, existsSync, fsyncSync, openSync, promises as fsp, readFileSync, readSync, writeSync } from 'fs'
import { spawn } from 'child_process'
import { createHash } from 'crypto'

export const SLOT = 64 * 1024

/** Deterministic slot contents, so the verifier can recompute any version. */
export function slotData(slot: number, version: number): Buffer {
  const out = Buffer.alloc(SLOT)
  let block = createHash('sha256').update(`${slot}:${version}`).digest()
  for (let o = 0; o < SLOT; o += block.length) { block.copy(out, o); block = createHash('sha256').update(block).digest() }
  return out
}

/** The journal's acknowledged version of each slot (the last) and every version tried of it. */
function readJournal(journal: string): { acked: Map<number, number>; tried: Map<number, number[]> } {
  const acked = new Map<number, number>(), tried = new Map<number, number[]>()
  for (const line of existsSync(journal) ? readFileSync(journal, 'utf8').split('\n') : []) {
    const m = /^(try|ack) (\d+) (\d+)$/.exec(line)
    if (!m) continue
    const slot = Number(m[2]), version = Number(m[3])
    if (m[1] === 'ack') acked.set(slot, version)
    else (tried.get(slot) ?? tried.set(slot, []).get(slot)!).push(version)
  }
  return { acked, tried }
}

/**
 * The first 4 KiB block of a slot (read into buf) that holds neither `version` nor a
 * version tried after it, or -1. A write not acknowledged may land in part, and one in
 * flight at an earlier kill may have landed and then been tried over without an
 * acknowledgement: either may be what a block holds.
 */
function badBlock(fd: number, buf: Buffer, slot: number, version: number, tried: number[] = []): number {
  readSync(fd, buf, 0, SLOT, slot * SLOT)
  const allowed = [version, ...tried.filter((v) => v > version)].map((v) => slotData(slot, v))
  for (let b = 0; b < SLOT; b += 4096) {
    const got = buf.subarray(b, b + 4096)
    if (!allowed.some((x) => got.equals(x.subarray(b, b + 4096)))) return b / 4096
  }
  return -1
}

/** Every slot the journal records an acknowledged write of holds it (or a later try, see badBlock). Returns the slots checked. */
export function verifyAcknowledged(img: string, journal: string): number {
  const { acked, tried } = readJournal(journal)
  const fd = openSync(img, 'r')
  const buf = Buffer.alloc(SLOT)
  try {
    for (const [slot, version] of acked) {
      const b = badBlock(fd, buf, slot, version, tried.get(slot))
      if (b >= 0) throw new Error(`slot ${slot} block ${b}: acknowledged version ${version} lost; it holds ${identify(buf.subarray(b * 4096, (b + 1) * 4096), b * 4096, journal)}`)
    }
  } finally {
    closeSync(fd)
  }
  return acked.size
}

/**
 * What a block that lost its data holds instead (the clue to how it was lost): zeros,
 * or block b of some version of some slot the journal names, or nothing known.
 */
function identify(got: Buffer, b: number, journal: string): string {
  if (!got.some((x) => x !== 0)) return 'zeros'
  for (const line of readFileSync(journal, 'utf8').split('\n')) {
    const m = /^try (\d+) (\d+)$/.exec(line)
    if (m && slotData(Number(m[1]), Number(m[2])).subarray(b, b + 4096).equals(got)) return `block ${b / 4096} of slot ${m[1]} version ${m[2]}`
  }
  return `data no write in the journal made (first bytes ${got.subarray(0, 16).toString('hex')})`
}

/**
 * Every one of `slots` slots holds its last acknowledged version (version 0, the first
 * fill, if none) or a later try (see badBlock). Returns the slots written.
 */
export function verifyEverySlot(img: string, journal: string, slots: number): number {
  const { acked, tried } = readJournal(journal)
  const fd = openSync(img, 'r')
  const buf = Buffer.alloc(SLOT)
  try {
    for (let s = 0; s < slots; s++) {
      const b = badBlock(fd, buf, s, acked.get(s) ?? 0, tried.get(s))
      if (b >= 0) throw new Error(`slot ${s} block ${b}: version ${acked.get(s) ?? 0} lost`)
    }
  } finally {
    closeSync(fd)
  }
  return acked.size
}

/** How many writes the journal records as acknowledged, over every round. */
export function acknowledgedCount(journal: string): number {
  try { return readFileSync(journal, 'utf8').split('\n').filter((l) => l.startsWith('ack ')).length } catch { return 0 }
}

/**
 * Starts a writer process on img; resolves when it exits (when the mount dies under it, or
 * `stop` aborts it). With `depth` > 1 it keeps that many writes (each with its fsync) in
 * flight at once, each on its own slots.
 */
export function startWriter(img: string, journal: string, slots: number, round: number, stop?: AbortSignal, depth = 1): Promise<unknown> {
  const writer = spawn(process.execPath, [__filename, img, journal, String(slots), String(round), String(depth)], {
    stdio: 'ignore', signal: stop, env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.max(4, depth)) },
  })
  writer.on('error', () => undefined) // an abort is reported as an error too; exit follows
  return new Promise((res) => writer.on('exit', res))
}

async function main() {
  const [img, journal, slotsArg, seedArg, depthArg] = process.argv.slice(2)
  const depth = Number(depthArg)
  const slots = Number(slotsArg)
  const j = openSync(journal, 'a')
  const log = (s: string) => { writeSync(j, s + '\n'); fsyncSync(j) }
  let seed = Number(seedArg) * 7919
  // Math.imul: a plain product passes 2^53 and loses the low bits, which cycled the slots through a handful of values
  const next = () => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed }
  // Versions grow across rounds too (each round is a new process with a larger seed).
  let counter = Number(seedArg) * 1_000_000
  const fh = await fsp.open(img, 'r+')
  // lane w writes only slots s with s % depth === w: a slot has one write in flight at most
  const lane = async (w: number) => {
    for (;;) {
      const slot = next() % slots
      if (slot % depth !== w) continue
      const v = ++counter
      log(`try ${slot} ${v}`)
      await fh.write(slotData(slot, v), 0, SLOT, slot * SLOT)
      await fh.sync()
      log(`ack ${slot} ${v}`)
    }
  }
  try {
    await Promise.all(Array.from({ length: depth }, (_, w) => lane(w)))
  } catch {
    // The daemon died under us: that is the point.
  } finally {
    await fh.close().catch(() => { /* the mount is gone */ })
    closeSync(j)
  }
}

if (require.main === module) void main()
