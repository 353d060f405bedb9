// The jobs registry: long operations (rebuild, resync, migration, flatten ...) are
// started here by the component that owns them, return an id at once, report
// progress, can be paused (cooperatively) and cancelled, and emit events that the
// daemon's event sink logs and streams to subscribed connections. With a store file
// the ids and the history of concluded jobs survive a restart.
import { EventEmitter } from 'events'
import { closeSync, constants as C, openSync, readFileSync, renameSync, writeSync } from 'fs'
import { VsmError } from '../block/blockdev'
import { EventLevel, EventSink, NULL_SINK } from './events'

export type JobState = 'created' | 'running' | 'paused' | 'concluded'

/** How a concluded job ended: its work is done, it was cancelled, or it failed. */
export type JobOutcome = 'done' | 'cancelled' | 'failed'

export interface JobInfo {
  id: number
  kind: string
  description?: string
  state: JobState
  /** Set once concluded. */
  outcome?: JobOutcome
  progress: { done: number; total: number }
  pausable: boolean
  /** Epoch milliseconds. */
  createdAt: number
  startedAt?: number
  concludedAt?: number
  cancelRequested: boolean
  /** Set when concluded without error. */
  result?: unknown
  /** Set when concluded with an error (ECANCELED when cancelled). */
  error?: { code: string; message: string }
}

/** Handed to the job's function: call it to report progress. */
export interface Progress {
  (done: number, total?: number): void
  /**
   * Pause point: resolves at once while running, waits while paused, and rejects
   * with ECANCELED once the job is cancelled. Pausing is cooperative because only the
   * job knows where its on-disk state is consistent enough to stop.
   */
  checkpoint(): Promise<void>
}

export type JobFn = (signal: AbortSignal, progress: Progress) => Promise<unknown>

export interface StartOptions {
  description?: string
  total?: number
  /** The job calls progress.checkpoint(); pause is refused otherwise. */
  pausable?: boolean
  /**
   * Cancel undoes the job's work (an aborted relayout): the job runs even when
   * cancelled before it started, so it can unwind what its owner recorded.
   */
  unwinds?: boolean
  /** Why cancel is refused now (EBUSY), or null when it may go ahead. */
  refuseCancel?: () => string | null
}

export interface JobEvent {
  event: 'job.created' | 'job.state' | 'job.progress' | 'job.cancelling' | 'job.concluded'
  data: JobInfo
}

export interface JobsOptions {
  /** Minimum gap between progress events of one job, so a tight loop cannot flood sockets (default 100). */
  progressIntervalMs?: number
  /** Concluded jobs remembered for list/wait (default 256); oldest are forgotten first. */
  keepConcluded?: number
  /** Where every job event is published (logged and streamed). */
  events?: EventSink
  /**
   * A file keeping the next id and the concluded jobs' history across restarts. A job
   * that was open when the process died is recorded as failed (EINTR): its owner
   * resumes its work, if any, as a new job.
   */
  store?: string
}

interface Job {
  info: JobInfo
  opts: StartOptions
  fn: JobFn
  abort: AbortController
  waiters: Array<() => void>
  resumeWaiters: Array<() => void>
  lastProgressEvent: number
  progressTimer: NodeJS.Timeout | null
  /** The last tenth of the way its progress was published at info (so the log keeps it). */
  loggedTenth?: number
}

function cancelledError(reason = 'job was cancelled'): VsmError { return new VsmError('ECANCELED', reason) }

/**
 * Emits 'event' (JobEvent) for every change, and also the specific event name
 * ('job.created', ...) with the JobInfo, for listeners that want only one kind.
 */
export class Jobs extends EventEmitter {
  private jobs = new Map<number, Job>()
  private nextId = 1
  private readonly progressIntervalMs: number
  private readonly keepConcluded: number
  private readonly events: EventSink

  constructor(opts: JobsOptions = {}) {
    super()
    this.events = opts.events ?? NULL_SINK
    this.progressIntervalMs = opts.progressIntervalMs ?? 100
    this.keepConcluded = opts.keepConcluded ?? 256
    this.store = opts.store
    if (this.store) this.load(this.store)
  }

  private readonly store?: string

  private load(file: string): void {
    let saved: { nextId?: number; jobs?: JobInfo[] }
    try {
      saved = JSON.parse(readFileSync(file, 'utf8'))
    } catch {
      return // none yet, or unreadable: ids start over rather than the daemon not starting
    }
    for (const info of Array.isArray(saved.jobs) ? saved.jobs : []) {
      if (typeof info?.id !== 'number') continue
      if (info.state !== 'concluded') {
        info.state = 'concluded'
        info.outcome = 'failed'
        info.error = { code: 'EINTR', message: 'the daemon stopped before the job ended' }
      }
      this.jobs.set(info.id, { info, opts: {}, fn: async () => undefined, abort: new AbortController(), waiters: [], resumeWaiters: [], lastProgressEvent: 0, progressTimer: null })
      this.nextId = Math.max(this.nextId, info.id + 1)
    }
    if (Number.isSafeInteger(saved.nextId)) this.nextId = Math.max(this.nextId, saved.nextId!)
    this.prune()
  }

  /**
   * Written synchronously (a small file) at every state change, so an id handed out is
   * on record before the caller sees it; no fsync: a kill -9 keeps the page cache.
   */
  private save(): void {
    if (!this.store) return
    const tmp = `${this.store}.tmp`
    try {
      const fd = openSync(tmp, C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW, 0o600)
      try { writeSync(fd, JSON.stringify({ nextId: this.nextId, jobs: this.list() }) + '\n') } finally { closeSync(fd) }
      renameSync(tmp, this.store)
    } catch {
      // history is a convenience: a full disk must not stop a rebuild
    }
  }

  /** Registers the job and returns its id; fn starts on a later tick. */
  start(kind: string, fn: JobFn, opts: StartOptions = {}): number {
    const id = this.nextId++
    const job: Job = {
      info: {
        id, kind, description: opts.description, state: 'created',
        progress: { done: 0, total: opts.total ?? 0 }, pausable: !!opts.pausable,
        createdAt: Date.now(), cancelRequested: false,
      },
      opts, fn, abort: new AbortController(), waiters: [], resumeWaiters: [],
      lastProgressEvent: 0, progressTimer: null,
    }
    this.jobs.set(id, job)
    this.publish('job.created', job)
    // Deferred so the caller has the id (and can reply with it) before any work or
    // event about the job's run happens.
    setImmediate(() => this.run(job))
    return id
  }

  list(): JobInfo[] { return [...this.jobs.values()].map((j) => snapshot(j.info)) }

  get(id: number): JobInfo { return snapshot(this.find(id).info) }

  /** Resolves with the concluded job's info (its error is in info.error, not thrown). */
  wait(id: number, signal?: AbortSignal): Promise<JobInfo> {
    const job = this.find(id)
    if (job.info.state === 'concluded') return Promise.resolve(snapshot(job.info))
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        job.waiters = job.waiters.filter((w) => w !== done)
        reject(new VsmError('ECANCELED', 'wait abandoned'))
      }
      const done = () => { signal?.removeEventListener('abort', onAbort); resolve(snapshot(job.info)) }
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      job.waiters.push(done)
    })
  }

  /** Waits for every job that has not concluded yet (those started while waiting included). */
  async waitAll(signal?: AbortSignal): Promise<JobInfo[]> {
    for (;;) {
      const open = [...this.jobs.values()].filter((j) => j.info.state !== 'concluded')
      if (open.length === 0) return this.list()
      await Promise.all(open.map((j) => this.wait(j.info.id, signal)))
    }
  }

  /**
   * Requests cancellation; idempotent, and a no-op on a concluded job (the returned
   * state and outcome say which). Refused (EBUSY) when the job says it cannot stop now.
   * reason: what the job's error says (the owner stopping it to resume later says so).
   */
  cancel(id: number, reason?: string): JobInfo {
    const job = this.find(id)
    if (job.info.state === 'concluded' || job.info.cancelRequested) return snapshot(job.info)
    const refused = job.opts.refuseCancel?.()
    if (refused) throw new VsmError('EBUSY', `job ${id} (${job.info.kind}) cannot be cancelled: ${refused}`)
    job.info.cancelRequested = true
    this.publish('job.cancelling', job)
    job.abort.abort(cancelledError(reason))
    if (job.info.state === 'created' && !job.opts.unwinds) {
      this.conclude(job, undefined, cancelledError(reason))
    } else if (job.info.state === 'paused') {
      // Wake the job's checkpoint so it sees the abort and unwinds.
      this.wake(job)
    }
    return snapshot(job.info)
  }

  pause(id: number): JobInfo {
    const job = this.find(id)
    if (!job.info.pausable) throw new VsmError('EOPNOTSUPP', `job ${id} (${job.info.kind}) cannot be paused`)
    if (job.info.state === 'paused') return snapshot(job.info)
    if (job.info.state !== 'running') throw new VsmError('EINVAL', `job ${id} is ${job.info.state}, not running`)
    job.info.state = 'paused'
    this.publish('job.state', job)
    return snapshot(job.info)
  }

  resume(id: number): JobInfo {
    const job = this.find(id)
    if (job.info.state === 'running') return snapshot(job.info)
    if (job.info.state !== 'paused') throw new VsmError('EINVAL', `job ${id} is ${job.info.state}, not paused`)
    job.info.state = 'running'
    this.publish('job.state', job)
    this.wake(job)
    return snapshot(job.info)
  }

  /** Cancels every open job and waits for them to unwind (daemon shutdown). */
  async cancelAll(): Promise<void> {
    const open = [...this.jobs.values()].filter((j) => j.info.state !== 'concluded')
    for (const j of open) this.cancel(j.info.id)
    await Promise.all(open.map((j) => this.wait(j.info.id)))
  }

  private find(id: number): Job {
    const job = this.jobs.get(Number(id))
    if (!job) throw new VsmError('ENOENT', `no job ${id}`)
    return job
  }

  private async run(job: Job): Promise<void> {
    if (job.info.state !== 'created') return // cancelled before it started
    job.info.state = 'running'
    job.info.startedAt = Date.now()
    this.publish('job.state', job)
    const progress = ((done: number, total?: number) => this.progress(job, done, total)) as Progress
    progress.checkpoint = () => this.checkpoint(job)
    try {
      const result = await job.fn(job.abort.signal, progress)
      this.conclude(job, result, undefined)
    } catch (e) {
      this.conclude(job, undefined, e)
    }
  }

  private progress(job: Job, done: number, total?: number): void {
    if (job.info.state === 'concluded') return
    if (Number.isFinite(done)) job.info.progress.done = done
    if (total !== undefined && Number.isFinite(total)) job.info.progress.total = total
    const now = Date.now()
    const finished = job.info.progress.total > 0 && job.info.progress.done >= job.info.progress.total
    if (finished || now - job.lastProgressEvent >= this.progressIntervalMs) {
      if (job.progressTimer) { clearTimeout(job.progressTimer); job.progressTimer = null }
      job.lastProgressEvent = now
      this.publish('job.progress', job)
    } else if (!job.progressTimer) {
      // Trailing event so the last value inside a throttle window is not lost.
      job.progressTimer = setTimeout(() => {
        job.progressTimer = null
        if (job.info.state === 'concluded') return
        job.lastProgressEvent = Date.now()
        this.publish('job.progress', job)
      }, this.progressIntervalMs - (now - job.lastProgressEvent))
      job.progressTimer.unref?.()
    }
  }

  private checkpoint(job: Job): Promise<void> {
    if (job.abort.signal.aborted) return Promise.reject(job.abort.signal.reason)
    if (job.info.state !== 'paused') return Promise.resolve()
    return new Promise((resolve, reject) => {
      job.resumeWaiters.push(() => (job.abort.signal.aborted ? reject(job.abort.signal.reason) : resolve()))
    })
  }

  private wake(job: Job): void {
    const ws = job.resumeWaiters
    job.resumeWaiters = []
    for (const w of ws) w()
  }

  private conclude(job: Job, result: unknown, err: unknown): void {
    if (job.info.state === 'concluded') return
    if (job.progressTimer) { clearTimeout(job.progressTimer); job.progressTimer = null }
    job.info.state = 'concluded'
    job.info.concludedAt = Date.now()
    if (err === undefined) {
      job.info.result = result
      job.info.outcome = 'done'
    } else if (job.info.cancelRequested) {
      // Whatever the job threw while unwinding, the operator asked for this; a job that
      // unwound says what it left (ECANCELED with its own message)
      const own = err instanceof VsmError && err.code === 'ECANCELED' ? err.message : (job.abort.signal.reason as Error)?.message
      job.info.error = { code: 'ECANCELED', message: own ?? 'job was cancelled' }
      job.info.outcome = 'cancelled'
    } else if (err instanceof VsmError) {
      job.info.error = { code: err.code, message: err.message }
    } else {
      job.info.error = { code: 'EIO', message: err instanceof Error ? err.message : String(err) }
    }
    job.info.outcome ??= 'failed'

    this.wake(job)
    this.publish('job.concluded', job)
    const ws = job.waiters
    job.waiters = []
    for (const w of ws) w()
    this.prune()
  }

  private prune(): void {
    const concluded = [...this.jobs.values()].filter((j) => j.info.state === 'concluded')
    for (let i = 0; i < concluded.length - this.keepConcluded; i++) this.jobs.delete(concluded[i].info.id)
  }

  private publish(event: JobEvent['event'], job: Job): void {
    if (event !== 'job.progress') this.save()
    const data = snapshot(job.info)
    this.events.publish(event, data, event === 'job.progress' ? progressLevel(job) : eventLevel(event, data))
    // A throwing listener is a bug elsewhere; it must not take the job down with it.
    try { this.emit(event, data) } catch { /* ignored */ }
    try { this.emit('event', { event, data } satisfies JobEvent) } catch { /* ignored */ }
  }
}

/** A job that failed is a warning; the rest is the record of what ran. */
function eventLevel(event: JobEvent['event'], info: JobInfo): EventLevel {
  if (event === 'job.concluded' && info.error && info.error.code !== 'ECANCELED') return 'warn'
  return 'info'
}

/** Progress is chatter (debug) but for each tenth of the way, which the log keeps at info. */
function progressLevel(job: Job): EventLevel {
  const { done, total } = job.info.progress
  const tenth = total > 0 ? Math.floor((10 * Math.min(done, total)) / total) : 0
  if (tenth <= (job.loggedTenth ?? 0)) return 'debug'
  job.loggedTenth = tenth
  return 'info'
}

function snapshot(info: JobInfo): JobInfo {
  return { ...info, progress: { ...info.progress }, error: info.error && { ...info.error } }
}
