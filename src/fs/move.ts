// fs move: a job that relocates a file's extents to another volume while the file is
// in use, one chunk at a time through FileSystem.relocate (the mechanism the HSM calls
// too). The file's placement switches first, so what is written meanwhile lands on the
// target and never needs moving; a crash leaves a file whose extents are partly moved,
// each chunk either wholly before or wholly after its remap. Each job records its intent
// (intent.ts) before it starts and drops it when it ends, so one that kill -9 or a
// shutdown interrupted runs again at the next mount (resumeFsJobs) and finishes.
import { VsmError } from '../block/blockdev'
import type { Jobs, Progress } from '../control/jobs'
import type { FileSystem } from './filesystem'
import { readJsonXattr, regularFiles, writeJsonXattr } from './intent'
import { isArchive } from './layout'
import { listPolicies } from './placement'

const CHUNK = 256 // blocks: 1 MiB per step, so the file's I/O waits at most one step's copy
const BS = 4096
/** On a file: {volume, rate?} of an fs move under way. */
const MOVE_XATTR = 'vsm.fs.move'
/** On the root, one per volume being removed (no RMW of one shared record by concurrent jobs). */
const REMOVE_XATTR = 'vsm.fs.remove.'

export interface MoveRequest { path: string; volume: string; rate?: number }

export function checkRate(rate: unknown): number {
  if (rate === undefined) return 0
  if (typeof rate !== 'number' || !Number.isSafeInteger(rate) || rate <= 0) throw new VsmError('EINVAL', 'rate: a positive number of bytes per second expected')
  return rate
}

export async function startMove(fs: FileSystem, jobs: Jobs, req: MoveRequest): Promise<{ job: number; path: string; volume: string }> {
  const rate = checkRate(req.rate)
  if (typeof req.path !== 'string' || !req.path) throw new VsmError('EINVAL', 'path: a file path expected')
  const path = req.path.startsWith('/') ? req.path : `/${req.path}`
  const to = fs.volumeIndex(req.volume)
  const ino = fs.lookup(path)
  fs.setPlacement(ino, to)
  await writeJsonXattr(fs, path, MOVE_XATTR, { volume: req.volume, ...(rate ? { rate } : {}) })
  const job = jobs.start('fs.move', (signal, progress) => endingIntent(fs, path, MOVE_XATTR, async () => {
    const moved = await moveExtents(fs, ino, path, to, signal, progress, rate)
    return { path: req.path, volume: req.volume, movedBytes: moved * BS, placement: fs.placementOf(ino) }
  }), { description: `move ${req.path} to ${req.volume}`, total: fs.blockSpan(ino), pausable: true })
  return { job, path: req.path, volume: req.volume }
}

/**
 * Runs `fn`, then drops the intent whatever its outcome (done, cancelled, failed: it is
 * not to run again). When the fs closed under it (a shutdown) the drop fails and the
 * intent stays, for the next mount to resume.
 */
async function endingIntent<T>(fs: FileSystem, path: string, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } finally {
    await writeJsonXattr(fs, path, name, null).catch(() => undefined)
  }
}

/**
 * Moves file `ino` (at `path`) onto volume `to`: its placement first (not to an archive:
 * what is written meanwhile is hot, it stays in the pool), then its extents in
 * 1 MiB steps, honouring pause, cancel and a rate in bytes per second (0: none); then a
 * commit. With `range` [b0, b1) (blocks), only those blocks move and the placement stays
 * (a range recall: the rest of the file is where it was). Returns the blocks moved.
 * fs move and the HSM both run this.
 */
export async function moveExtents(fs: FileSystem, ino: number, path: string, to: number, signal: AbortSignal, progress: Progress, rate = 0, range?: [number, number]): Promise<number> {
  if (!range && !isArchive(to)) fs.setPlacement(ino, to)
  const [b0, b1] = range ?? [0, fs.blockSpan(ino)]
  const t0 = Date.now()
  const moved = await relocateAll(fs, ino, to, signal, async (b) => {
    if (fs.lookup(path) !== ino) throw new VsmError('ENOENT', `${path} went away during the move`)
    progress(b - b0, b1 - b0)
    if (rate) {
      const due = t0 + ((b - b0) * BS / rate) * 1000
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()))
    }
    await progress.checkpoint()
  }, [b0, b1])
  progress(b1 - b0, b1 - b0)
  await fs.sync()
  return moved
}

/** Relocate the blocks of `ino` (those in `range`, else all) onto `to` in steps; `step` runs before each (pause, pacing, checks; told the step's first block), then cancel is honoured. */
async function relocateAll(fs: FileSystem, ino: number, to: number, signal: AbortSignal, step: (b: number) => Promise<void>, range?: [number, number]): Promise<number> {
  let moved = 0
  const [b0, b1] = range ?? [0, fs.blockSpan(ino)]
  for (let b = b0; b < b1; b += CHUNK) {
    await step(b)
    if (signal.aborted) throw new VsmError('ECANCELED', 'cancelled')
    moved += await fs.relocate(ino, b, Math.min(b1, b + CHUNK), to)
  }
  return moved
}

/**
 * remove-volume: a job that moves every file and snapshot off a volume onto `target`
 * (default: the fs's first volume, which holds the metadata), then drops it from the
 * fs. Refused while a placement rule names it (the rule would have nowhere to send new
 * files).
 */
export async function startRemoveVolume(fs: FileSystem, jobs: Jobs, name: string, target?: string): Promise<{ job: number; volume: string; to: string }> {
  const named = listPolicies(fs).filter((r) => r.volume === name)
  if (named.length) throw new VsmError('EBUSY', `placement policy on ${named[0].dir} puts files on ${name}: change it first (vsm fs policy set)`)
  const to = target === undefined ? 0 : fs.volumeIndex(target)
  const v = fs.beginRemove(name, to)
  const total = fs.inodesOn(v).length
  try {
    await writeJsonXattr(fs, '/', REMOVE_XATTR + name, { volume: name, to: target })
  } catch (e) {
    fs.cancelRemove(v)
    throw e
  }
  const job = jobs.start('fs.remove-volume', (signal, progress) => endingIntent(fs, '/', REMOVE_XATTR + name, async () => {
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
      return { volume: name, to: fs.volumes()[to].name, movedBytes: moved * BS }
    } catch (e) {
      fs.cancelRemove(v)
      throw e
    }
  }), { description: `remove volume ${name} from the fs`, total, pausable: true })
  return { job, volume: name, to: fs.volumes()[to].name }
}

/**
 * At mount: the fs moves and remove-volumes a crash or shutdown interrupted, started
 * again as new jobs (a removal first, so a move onto the volume it empties is refused
 * rather than undone). Intents that can no longer run (volume gone) are dropped.
 */
export async function resumeFsJobs(fs: FileSystem, jobs: Jobs): Promise<{ what: string; job?: number; error?: string }[]> {
  const todo: { what: string; path: string; name: string; run: () => Promise<{ job: number }> }[] = []
  for (const x of fs.listxattr('/').filter((n) => n.startsWith(REMOVE_XATTR))) {
    const { volume = x.slice(REMOVE_XATTR.length), to } = readJsonXattr<{ volume?: string; to?: string }>(fs, '/', x, {})
    todo.push({ what: `remove-volume ${volume}`, path: '/', name: x, run: () => startRemoveVolume(fs, jobs, volume, to) })
  }
  for (const path of regularFiles(fs, '/')) {
    const { volume, rate } = readJsonXattr<{ volume?: string; rate?: number }>(fs, path, MOVE_XATTR, {})
    if (volume !== undefined) todo.push({ what: `move ${path} to ${volume}`, path, name: MOVE_XATTR, run: () => startMove(fs, jobs, { path, volume, rate }) })
  }
  const out: { what: string; job?: number; error?: string }[] = []
  for (const t of todo) {
    try {
      out.push({ what: t.what, job: (await t.run()).job })
    } catch (e) {
      await writeJsonXattr(fs, t.path, t.name, null)
      out.push({ what: t.what, error: (e as Error).message })
    }
  }
  return out
}
