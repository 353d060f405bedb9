// A writer process for the replicator's prefix tests: one serial stream of 4 KiB writes
// spread over several disk files (so over several volumes), each fdatasync'd before the
// next is tried, each block stamped with its place in the stream; a journal line (outside
// the mount) names every write before it is tried. prefixOf() checks that what a site
// holds is exactly the stream up to some write: never a later write without an earlier one.
import { appendFileSync, closeSync, fdatasyncSync, openSync, readFileSync, readSync, writeSync } from 'fs'
import { spawn } from 'child_process'

export const BLOCK = 4096
const MAGIC = 0x5354524d

function block(i: number, disk: number, slot: number): Buffer {
  const b = Buffer.alloc(BLOCK, i & 0xff)
  b.writeUInt32LE(MAGIC, 0)
  b.writeUInt32LE(i, 4)
  b.writeUInt32LE(disk, 8)
  b.writeUInt32LE(slot, 12)
  return b
}

/** Starts the writer on the disk files; resolves when it exits (when the mount dies under it). */
export function startStream(disks: string[], journal: string, slots: number): Promise<unknown> {
  const p = spawn(process.execPath, [__filename, journal, String(slots), ...disks], { stdio: 'ignore' })
  return new Promise((res) => p.on('exit', res))
}

/** Writes tried, in stream order: [disk, slot] of write i at index i - 1. */
export function journalOf(journal: string): Array<[number, number]> {
  return readFileSync(journal, 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ').slice(1).map(Number) as [number, number])
}

/**
 * The k such that the disks (as a site serves them) hold exactly writes 1..k of the
 * stream: every slot the last of those that went to it, none of the later ones. Throws,
 * naming the slot, when they hold no prefix.
 */
export function prefixOf(disks: string[], journal: string, slots: number): number {
  const tried = journalOf(journal)
  const found = disks.map((d, di) => {
    const fd = openSync(d, 'r')
    try {
      return Array.from({ length: slots }, (_, s) => {
        const b = Buffer.alloc(BLOCK)
        readSync(fd, b, 0, BLOCK, s * BLOCK)
        if (b.readUInt32LE(0) !== MAGIC) return 0
        const i = b.readUInt32LE(4)
        // the whole block as write i made it, for this disk and slot
        if (!b.equals(block(i, di, s))) throw new Error(`${d} slot ${s}: a torn or misplaced block`)
        return i
      })
    } finally { closeSync(fd) }
  })
  const k = Math.max(0, ...found.flat())
  const want = disks.map(() => new Array<number>(slots).fill(0))
  for (let i = 1; i <= k; i++) {
    const [d, s] = tried[i - 1]
    want[d][s] = i
  }
  for (let d = 0; d < disks.length; d++) {
    for (let s = 0; s < slots; s++) {
      if (found[d][s] !== want[d][s]) throw new Error(`not a prefix of the stream: up to write ${k}, ${disks[d]} slot ${s} should hold write ${want[d][s]} and holds ${found[d][s]}`)
    }
  }
  return k
}

function main() {
  const [journal, slotsArg, ...disks] = process.argv.slice(2)
  const slots = Number(slotsArg)
  const fds = disks.map((d) => openSync(d, 'r+'))
  let seed = 12345
  const next = () => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed }
  try {
    for (let i = 1; ; i++) {
      const disk = i % disks.length, slot = next() % slots
      appendFileSync(journal, `${i} ${disk} ${slot}\n`)
      writeSync(fds[disk], block(i, disk, slot), 0, BLOCK, slot * BLOCK)
      fdatasyncSync(fds[disk])
    }
  } catch {
    // the daemon died under us: that is the point
  } finally {
    for (const fd of fds) try { closeSync(fd) } catch { /* the mount is gone */ }
  }
}

if (require.main === module) main()
