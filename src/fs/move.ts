// fs move: a job that relocates a file's extents to another volume while the file is
// in use, one chunk at a time through FileSystem.relocate (the mechanism the HSM calls
// too). The file's placement switches first, so what is written meanwhile lands on the
// target and never needs moving; a crash leaves a file whose extents are partly moved,
// each chunk either wholly before or wholly after its remap, and running it again
// finishes the move.
import { VsmError } from '../block/blockdev'
import type { Jobs } from '../control/jobs'
import type { FileSystem } from './filesystem'

const CHUNK = 256 // blocks: 1 MiB per step, so the file's I/O waits at most one step's copy
const BS = 4096

export interface MoveRequest { path: string; volume: string; rate?: number }

function checkRate(rate: unknown): number {
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
  const span = fs.blockSpan(ino)
  const job = jobs.start('fs.move', async (signal, progress) => {
    const t0 = Date.now()
    let moved = 0
    for (let b = 0; b < span; b += CHUNK) {
      await progress.checkpoint()
      if (signal.aborted) throw new VsmError('ECANCELED', 'fs move cancelled')
      if (fs.lookup(path) !== ino) throw new VsmError('ENOENT', `${req.path} went away during the move`)
      moved += await fs.relocate(ino, b, Math.min(span, b + CHUNK), to)
      progress(Math.min(span, b + CHUNK), span)
      if (rate) {
        const due = t0 + (moved * BS / rate) * 1000
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()))
      }
    }
    await fs.sync()
    return { path: req.path, volume: req.volume, movedBytes: moved * BS, placement: fs.placementOf(ino) }
  }, { description: `move ${req.path} to ${req.volume}`, total: span, pausable: true })
  return { job, path: req.path, volume: req.volume }
}
