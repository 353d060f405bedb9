// A writer process for the crash test: writes whole slots of a disk image with
// versioned contents, fsyncs each, and journals (outside the mount, fsync'd) what it
// tried and what was acknowledged, until the mount dies under it.
import { closeSync, fsyncSync, openSync, writeSync } from 'fs'
import { createHash } from 'crypto'

export const SLOT = 64 * 1024

/** Deterministic slot contents, so the verifier can recompute any version. */
export function slotData(slot: number, version: number): Buffer {
  const out = Buffer.alloc(SLOT)
  let block = createHash('sha256').update(`${slot}:${version}`).digest()
  for (let o = 0; o < SLOT; o += block.length) { block.copy(out, o); block = createHash('sha256').update(block).digest() }
  return out
}

function main() {
  const [img, journal, slotsArg, seedArg] = process.argv.slice(2)
  const slots = Number(slotsArg)
  const j = openSync(journal, 'a')
  const log = (s: string) => { writeSync(j, s + '\n'); fsyncSync(j) }
  let seed = Number(seedArg) * 7919
  const next = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed }
  // Versions grow across rounds too (each round is a new process with a larger seed).
  let counter = Number(seedArg) * 1_000_000
  const fd = openSync(img, 'r+')
  try {
    for (;;) {
      const slot = next() % slots
      const v = ++counter
      log(`try ${slot} ${v}`)
      writeSync(fd, slotData(slot, v), 0, SLOT, slot * SLOT)
      fsyncSync(fd)
      log(`ack ${slot} ${v}`)
    }
  } catch {
    // The daemon died under us: that is the point.
  } finally {
    try { closeSync(fd) } catch { /* the mount is gone */ }
    closeSync(j)
  }
}

if (require.main === module) main()
