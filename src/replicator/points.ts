// Consistent points of a replicated group, seed 002's DR plan: on the group's schedule
// every disk of the fs is frozen, snapshotted under one name and thawed, and the points
// beyond the kept count are deleted. The snapshots are fs metadata on the group's
// volumes, so they reach the secondary through the log like any write: a site that took
// the group over holds them and can start a disk at any kept point (vsm snapshot revert,
// vsm disk clone DISK@POINT).
// This module is the policy (when, which name, how many to keep); freezing and
// snapshotting are the virtualizer's, passed in as PointDisks.
import { VsmError } from '../block/blockdev'

export interface Schedule { everyMs: number; keep: number }

/** What a point needs of the virtualizer; disks are named by their path in the view. */
export interface PointDisks {
  list(): string[]
  /** Holds the disk's writes (its acknowledged ones made durable first). */
  freeze(path: string): Promise<void>
  thaw(path: string): void
  snapshot(path: string, name: string): Promise<void>
  snapshots(path: string): string[]
  deleteSnapshot(path: string, name: string): Promise<void>
  /** Makes everything before it durable (through the replication log). */
  sync(): Promise<void>
}

/** A group as the scheduler sees it. */
export interface ScheduledGroup {
  name: string
  schedule: Schedule | undefined
  /** Nothing is taken while the secondary has taken the group over. */
  takenOver: boolean
  /** A point's snapshots are durable locally: the group remembers how far its log reached. */
  pointTaken(name: string): Promise<void>
  /** Whether the secondary holds a point (null: unknown, taken before this was recorded). */
  onSecondary(name: string): boolean | null
  forgetPoints(names: string[]): Promise<void>
}

export const MIN_EVERY_MS = 1000
export const MAX_KEEP = 1000

const prefix = (group: string) => `repl-${group}-`

/** repl-GROUP-20261202T174012345Z: sorts by time, read back by pointTime. */
export const pointName = (group: string, at: number) => prefix(group) + new Date(at).toISOString().replace(/[-:.]/g, '')

export function pointTime(group: string, name: string): number | null {
  if (!name.startsWith(prefix(group))) return null
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)(\d{3})Z$/.exec(name.slice(prefix(group).length))
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]) : null
}

export function checkSchedule(everyMs: unknown, keep: unknown): Schedule {
  if (typeof everyMs !== 'number' || !Number.isSafeInteger(everyMs) || everyMs < MIN_EVERY_MS) throw new VsmError('EINVAL', `every: at least ${MIN_EVERY_MS / 1000} s expected, not ${JSON.stringify(everyMs)} ms`)
  if (typeof keep !== 'number' || !Number.isSafeInteger(keep) || keep < 1 || keep > MAX_KEEP) throw new VsmError('EINVAL', `keep: 1 to ${MAX_KEEP} points expected, not ${JSON.stringify(keep)}`)
  return { everyMs, keep }
}

export interface PointInfo { name: string; at: number; disks: number; onSecondary: boolean | null }

/** The group's points, oldest first: every snapshot name it made on any disk. */
export function listPoints(disks: PointDisks, g: Pick<ScheduledGroup, 'name' | 'onSecondary'>): PointInfo[] {
  const count = new Map<string, number>()
  for (const d of disks.list()) for (const s of disks.snapshots(d)) if (pointTime(g.name, s) !== null) count.set(s, (count.get(s) ?? 0) + 1)
  return [...count].map(([name, n]) => ({ name, at: pointTime(g.name, name)!, disks: n, onSecondary: g.onSecondary(name) })).sort((a, b) => a.at - b.at)
}

/**
 * Freezes every disk, snapshots each under one name, thaws them all (also when a step
 * fails: a guest is never left frozen by a failed point). A point that fails deletes the
 * snapshots it made, where it can: left, they would be listed as a point of fewer disks.
 */
export async function takePoint(disks: PointDisks, g: ScheduledGroup, at: number): Promise<{ name: string; disks: string[] }> {
  const name = pointName(g.name, at)
  const all = disks.list()
  const frozen: string[] = [], made: string[] = []
  try {
    for (const d of all) {
      await disks.freeze(d)
      frozen.push(d)
    }
    for (const d of all) {
      await disks.snapshot(d, name)
      made.push(d)
    }
  } catch (e) {
    for (const d of made) await disks.deleteSnapshot(d, name).catch(() => {})
    throw e
  } finally {
    for (const d of frozen) disks.thaw(d)
  }
  await disks.sync()
  await g.pointTaken(name)
  return { name, disks: all }
}

/** Deletes the oldest points beyond keep; a snapshot that cannot go is reported and kept. */
export async function prunePoints(disks: PointDisks, g: ScheduledGroup, keep: number, failed: (disk: string, name: string, e: Error) => void): Promise<string[]> {
  const old = listPoints(disks, g).slice(0, -keep).map((p) => p.name)
  const gone: string[] = []
  for (const name of old) {
    let ok = true
    for (const d of disks.list()) {
      if (!disks.snapshots(d).includes(name)) continue
      try { await disks.deleteSnapshot(d, name) } catch (e) { ok = false; failed(d, name, e as Error) }
    }
    if (ok) gone.push(name)
  }
  await g.forgetPoints(gone)
  return gone
}

export interface KeeperEvents {
  taken(group: string, name: string, disks: string[], deleted: string[]): void
  failed(group: string, reason: string): void
}

/** Runs each scheduled group's points when due; one point at a time. */
export class PointKeeper {
  private timer: NodeJS.Timeout | null = null
  /** The tick under way: stop() waits for it, so a point is never cut off by the fs closing under it. */
  private running: Promise<void> | null = null
  /** Last point per group, read from the snapshots' names at first sight. */
  private last = new Map<string, number>()

  constructor(private readonly disks: PointDisks, private readonly groups: () => ScheduledGroup[], private readonly events: KeeperEvents) {}

  start(tickMs = 1000): void {
    this.timer ??= setInterval(() => void this.tick(Date.now()), tickMs)
    this.timer.unref()
  }

  /** No more points; resolves once a point under way has ended. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.running
  }

  points(g: ScheduledGroup): PointInfo[] { return listPoints(this.disks, g) }

  /** The next point of g is due at (null: no schedule). */
  dueAt(g: ScheduledGroup): number | null {
    if (!g.schedule || g.takenOver) return null
    if (!this.last.has(g.name)) this.last.set(g.name, this.points(g).at(-1)?.at ?? 0)
    return this.last.get(g.name)! + g.schedule.everyMs
  }

  /** Takes the points due at now; while a tick is under way, another is that one. */
  tick(now: number): Promise<void> {
    this.running ??= this.takeDue(now).finally(() => { this.running = null })
    return this.running
  }

  private async takeDue(now: number): Promise<void> {
    for (const g of this.groups()) {
      const due = this.dueAt(g), keep = g.schedule?.keep
      if (due === null || due > now || keep === undefined) continue
      this.last.set(g.name, now)
      try {
        const p = await takePoint(this.disks, g, now)
        const deleted = await prunePoints(this.disks, g, keep, (d, n, e) => this.events.failed(g.name, `point ${n} of ${d} not deleted: ${e.message}`))
        this.events.taken(g.name, p.name, p.disks, deleted)
      } catch (e) {
        this.events.failed(g.name, (e as Error).message)
      }
    }
  }
}
