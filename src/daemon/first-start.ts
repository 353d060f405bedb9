// The first `vsm up` in a home makes the embedded default (pool, devices, volume, fs)
// in several steps; killed between two of them it would leave a pool the next start
// refuses (no vol0, a label naming a device never committed...). So while it makes
// them, a marker in the home records which of those paths did not exist before, and a
// start that finds the marker removes them and begins again: nothing was served yet,
// so nothing of anyone's is lost. The marker goes once the fs is made, before the view
// serves.
import { promises as fsp } from 'fs'
import { join } from 'path'
import { POOL_FILE, ARCHIVE_DIR } from '../volume/store'

const MARKER = 'making-default.json'

/** Paths under home that making the default creates (device files as createDefaultPool names them). */
export function defaultPaths(home: string): string[] {
  return [join(home, POOL_FILE), join(home, ARCHIVE_DIR), join(home, 'devices', 'd0.img'), join(home, 'devices', 'd1.img')]
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(() => true, () => false)
}

/** Durably: a crash must never leave the default half made without the marker. */
async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

/** Before making the default: record what does not exist yet. */
export async function beginMaking(home: string): Promise<void> {
  const made: string[] = []
  for (const p of defaultPaths(home)) if (!(await exists(p))) made.push(p)
  const file = join(home, MARKER)
  const fh = await fsp.open(file, 'w', 0o600)
  try {
    await fh.writeFile(JSON.stringify({ made }) + '\n')
    await fh.sync()
  } finally { await fh.close() }
  await syncDir(home)
}

/** The default is made (its fs too, or it needs none): nothing to undo any more. */
export async function doneMaking(home: string): Promise<void> {
  if (!(await exists(join(home, MARKER)))) return
  await fsp.rm(join(home, MARKER))
  await syncDir(home)
}

/**
 * A start killed while making the default left the marker: remove what it made, so
 * this start makes it again. Returns the paths removed (none when there was no marker).
 */
export async function undoUnfinished(home: string): Promise<string[]> {
  let made: string[]
  try {
    made = JSON.parse(await fsp.readFile(join(home, MARKER), 'utf8')).made
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
    // torn or empty: it was being written, so nothing had been made yet
    made = []
  }
  const ours = new Set(defaultPaths(home))
  const removed: string[] = []
  for (const p of made) {
    // only ever what the marker may name
    if (!ours.has(p) || !(await exists(p))) continue
    await fsp.rm(p, { recursive: true, force: true })
    removed.push(p)
  }
  await syncDir(home)
  await doneMaking(home)
  return removed
}
