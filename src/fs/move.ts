// fs move: a job that relocates a file's extents to another volume while the file is
// in use, one chunk at a time through FileSystem.relocate (the mechanism the HSM calls
// too). The file's placement switches first, so what is written meanwhile lands on the
// target and never needs moving; a crash leaves a file whose extents are partly moved,
// each chunk either wholly before or wholly after its remap, and running it again
// finishes the move.
import { VsmError } from '../block/blockdev'
import type { Jobs, Progress } from '../control/jobs'
import type { FileSystem } from './filesystem'
import { isArchive } from './layout'
import { listPolicies } from './placement'

const CHUNK = 256 // blocks: 1 MiB per step, so the file's I/O waits at most one step's copy
const BS = 4096

export interface MoveRequest { path: string; volume: string; rate?: number }

export function checkRate(rate: unknown): number {
  if (rate === undefined) return 0
  if (typeof rate !== 'number' || !Number.isSafeInteger(rate) || rate <= 0) throw new VsmError('EINVAL', 'rate: a positive number of bytes per second expected')
  return rate
}

export function startMove(fs: FileSystem, jobs: Jobs, req: MoveRequest): { job: number; path: string; volume: string } {
  const rate = checkRate(req.rate)
  if (typeof req.path !== 'string' || !req.path) throw new VsmError('EINVAL', 'path: a file path expected')
  const path = req.path.startsWith('/') ? req.path : `/${req.path}`
  const to = fs.volumeIndex(req.volume)
  const ino = fs.lookup(path)
  fs.setPlacement(ino, to)
  const job = jobs.start('fs.move', async (signal, progress) => {
    const moved = await moveExtents(fs, ino, path, to, signal, progress, rate)
    return { path: req.path, volume: req.volume, movedBytes: moved * BS, placement: fs.placementOf(ino) }
  }, { description: `move ${req.path} to ${req.volume}`, total: fs.blockSpan(ino), pausable: true })
  return { job, path: req.path, volume: req.volume }
}

/**
 * Moves file `ino` (at `path`) onto volume `to`: its placement first (not to an archive:
 * what is written meanwhile is hot, it stays in the pool), then its extents in
 * 1 MiB steps, honouring pause, cancel and a rate in bytes per second (0: none); then a
 * commit. Returns the blocks moved. fs move and the HSM both run this.
 */
export async function moveExtents(fs: FileSystem, ino: number, path: string, to: number, signal: AbortSignal, progress: Progress, rate = 0): Promise<number> {
  if (!isArchive(to)) fs.setPlacement(ino, to)
  const span = fs.blockSpan(ino)
  const t0 = Date.now()
  let b = 0
  const moved = await relocateAll(fs, ino, to, signal, async () => {
    if (fs.lookup(path) !== ino) throw new VsmError('ENOENT', `${path} went away during the move`)
    progress(Math.min(span, b), span)
    if (rate) {
      const due = t0 + (b * BS / rate) * 1000
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()))
    }
    b += CHUNK
    await progress.checkpoint()
  })
  progress(span, span)
  await fs.sync()
  return moved
}

/** Relocate every block of `ino` onto `to` in steps; `step` runs before each (pause, pacing, checks), then cancel is honoured. */
async function relocateAll(fs: FileSystem, ino: number, to: number, signal: AbortSignal, step: () => Promise<void>): Promise<number> {
  let moved = 0
  const span = fs.blockSpan(ino)
  for (let b = 0; b < span; b += CHUNK) {
    await step()
    if (signal.aborted) throw new VsmError('ECANCELED', 'cancelled')
    moved += await fs.relocate(ino, b, Math.min(span, b + CHUNK), to)
  }
  return moved
}

/**
 * remove-volume: a job that moves every file and snapshot off a volume onto the fs's
 * first volume, then drops it from the fs. Refused while a placement rule names it (the
 * rule would have nowhere to send new files).
 */
export function startRemoveVolume(fs: FileSystem, jobs: Jobs, name: string): { job: number; volume: string } {
  const named = listPolicies(fs).filter((r) => r.volume === name)
  if (named.length) throw new VsmError('EBUSY', `placement policy on ${named[0].dir} puts files on ${name}: change it first (vsm fs policy set)`)
  const to = 0
  const v = fs.beginRemove(name, to)
  const total = fs.inodesOn(v).length
  const job = jobs.start('fs.remove-volume', async (signal, progress) => {
    try {
      let moved = 0, done = 0
      for (;;) {
        const left = fs.inodesOn(v)
        if (!left.length) break
        for (const ino of left) {
          moved += await relocateAll(fs, ino, to, signal, () => progress.checkpoint())
          progress(++done, Math.max(total, done))
        }
      }
      await fs.finishRemove(v)
      return { volume: name, movedBytes: moved * BS }
    } catch (e) {
      fs.cancelRemove(v)
      throw e
    }
  }, { description: `remove volume ${name} from the fs`, total, pausable: true })
  return { job, volume: name }
}
