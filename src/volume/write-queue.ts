// The writes of the backing devices, plugged for a turn of the event loop (as the
// kernel's blk_plug holds a task's requests). A WriteQueue holds one open file's writes;
// the WritePlug its queues share sends what all of them queued while the loop served a
// batch of FUSE requests to vsm_sys's write threads as few jobs (pwriteBatch,
// native/sys.cc): a mirror's copies of a 4 KiB write are one job, one wake of a write
// thread and one completion, not two (waking a thread of libuv's pool, which carried
// them then, took 15% of the main thread under 4 KiB random writes at QD1: perf,
// pthread_cond_signal in uv_queue_work; fio 4 KiB random writes QD1 vsm/qsd went from
// 0.50-0.55 to 0.64-0.70). A job holds up to JOB_BYTES (one larger write goes
// alone), so large writes and the bursts of queued I/O still copy into the page cache on
// several threads (with 128 KiB, QD16 random writes looked ~10% slower).
//
// A hung device must hold up its own writes only. A job not done after RESCUE_MS has the
// writes it has not begun taken back (takeBack: each write is claimed before it starts,
// so none is both taken back and written) and queued again where they came from, and
// those it has written answered at once: only the write it is blocked in stays with it.
// That write's queue is then sent alone until its jobs drain, and a queue has at most
// MAX_JOBS jobs in the pool, so a hung device ties up at most that many threads.
// The descriptor stays open while a job of the queue may use it: close waits for idle().
//
// A flush (sync) is an item of the queue too, fdatasync on a write thread (not libuv's
// pool, which wakes a thread twice per job): it covers every write queued before it, so
// it is sent only once the queue's earlier jobs are done, or in one job after the writes
// queued in the same turn just before it when they are few. Each flush is a job of its
// own, so the copies of a mirror flush on two threads at once.
// An abandoned device's writes not begun are dropped, never sent: if its jobs ever
// return, a write sent then could land on a copy a resync has since made current.
import { VsmError, type WriteAck } from '../block/blockdev'
import { pwriteBatch, takeBack, type PwriteJob } from '../native/sys'

/** Jobs one queue may have with the write threads at once (WRITERS in native/sys.cc: 16). */
const MAX_JOBS = 2
/** Bytes one job writes, unless one write alone is larger. */
const JOB_BYTES = 64 * 1024
/** A job older than this has its writes not yet begun taken back (ms). */
const RESCUE_MS = 50

/** buf null: a flush. */
interface Queued { buf: Buffer | null; offset: number; resolve: () => void; reject: (e: unknown) => void; ack?: WriteAck }
/** settled: answered before its job ended (taken back, or written when the job was looked at). */
interface Item { q: WriteQueue; w: Queued; settled: boolean }
interface Job { native: PwriteJob | null; items: Item[]; queues: Set<WriteQueue>; since: number }

/** Sends the writes its queues hold as jobs of the write threads, once per turn of the event loop. */
export class WritePlug {
  private ready: WriteQueue[] = []
  private scheduled = false
  private readonly running = new Set<Job>()
  private watch: NodeJS.Timeout | null = null
  /** Jobs handed to the write threads so far (tests, profiles). */
  sent = 0
  /** Writes taken back from jobs a blocked write held up (tests). */
  rescued = 0

  /** q has writes queued: they go with the others of this turn. */
  schedule(q: WriteQueue): void {
    this.ready.push(q)
    if (!this.scheduled) { this.scheduled = true; setImmediate(this.unplug) }
  }

  /** Takes q's writes not begun out of the jobs in the pool: for a queue abandoned, whose writes must never be sent. */
  abandon(q: WriteQueue): void {
    for (const job of this.running) if (job.queues.has(q)) this.takeBack(job)
  }

  private readonly unplug = (): void => {
    this.scheduled = false
    const together: Item[] = []
    for (const q of this.ready.splice(0)) {
      const ws = q.take()
      if (!ws) continue
      const items = ws.map((w) => ({ q, w, settled: false }))
      if (ws[ws.length - 1].buf === null) this.start(items)
      else if (q.solo) this.send(items)
      else for (const it of items) together.push(it)
    }
    this.send(together)
  }

  /** items as jobs of up to JOB_BYTES each, in order. */
  private send(items: Item[]): void {
    let from = 0, bytes = 0
    for (let i = 0; i < items.length; i++) {
      const n = items[i].w.buf!.length
      if (i > from && bytes + n > JOB_BYTES) { this.start(items.slice(from, i)); from = i; bytes = 0 }
      bytes += n
    }
    if (from < items.length) this.start(from === 0 ? items : items.slice(from))
  }

  private start(items: Item[]): void {
    const job: Job = { native: null, items, queues: new Set(items.map((it) => it.q)), since: Date.now() }
    for (const q of job.queues) q.jobs++
    this.sent++
    this.running.add(job)
    // one pass over the items: this runs for every job of every guest write
    const fds: number[] = [], bufs: (Buffer | null)[] = [], offsets: number[] = [], acks: unknown[] = []
    let acked = false
    for (const { q, w } of items) {
      fds.push(q.fd); bufs.push(w.buf); offsets.push(w.offset); acks.push(w.ack?.handle)
      if (w.ack) acked = true
    }
    job.native = pwriteBatch(fds, bufs, offsets, (errors) => this.done(job, errors), acked ? acks : undefined)
    this.watch ??= setInterval(this.rescue, RESCUE_MS).unref()
  }

  private done(job: Job, errors: (string | undefined)[]): void {
    this.running.delete(job)
    for (let i = 0; i < job.items.length; i++) if (!job.items[i].settled) answer(job.items[i], errors[i])
    for (const q of job.queues) q.jobDone()
  }

  private readonly rescue = (): void => {
    // the watch runs while jobs do (stopped here, not per job: a timer set and cleared per write costs the main thread)
    if (this.running.size === 0) { clearInterval(this.watch!); this.watch = null; return }
    const now = Date.now()
    for (const job of this.running) {
      if (now - job.since < RESCUE_MS) continue
      this.takeBack(job)
      for (const q of job.queues) q.solo = true
    }
  }

  /**
   * The job's writes not begun go back to the front of their queues (in order, or fail
   * there if abandoned), those done are answered; the job then counts only against the
   * queue of the write it is in.
   */
  private takeBack(job: Job): void {
    const states = takeBack(job.native!)
    const back = new Map<WriteQueue, Queued[]>()
    const busy = new Set<WriteQueue>()
    for (let i = 0; i < job.items.length; i++) {
      const it = job.items[i]
      if (it.settled) continue
      const state = states[i]
      if (state === 'busy') { busy.add(it.q); continue }
      it.settled = true
      if (state !== 'taken') { answer(it, state); continue }
      this.rescued++
      const ws = back.get(it.q)
      if (ws) ws.push(it.w); else back.set(it.q, [it.w])
    }
    for (const q of job.queues) if (!busy.has(q)) { job.queues.delete(q); q.jobDone() }
    for (const [q, ws] of back) q.putBack(ws)
  }
}

function answer({ q, w }: Item, err: string | undefined): void {
  if (err === undefined) w.resolve()
  else w.reject(new VsmError(err, w.buf ? `write on ${q.path} at ${w.offset}: ${err}` : `flush of ${q.path}: ${err}`))
}

/** One open file's writes, sent by the plug it shares with the other devices. */
export class WriteQueue {
  private queued: Queued[] = []
  /** Flushes among queued. */
  private syncs = 0
  private waiting = false
  private idleWaiters: (() => void)[] = []
  private dead: Error | null = null
  /** Jobs in the pool holding writes of this queue (the plug counts them). */
  jobs = 0
  /** Sent in jobs of its own, not with other queues' writes: set when one of its jobs was held up, until its jobs drain. */
  solo = false

  constructor(readonly fd: number, readonly path: string, private readonly plug: WritePlug = new WritePlug()) {}

  /** `ack`: the write is a piece of it, told once written (a write taken back keeps it when sent again). */
  write(buf: Buffer, offset: number, ack?: WriteAck): Promise<void> {
    if (this.dead) return Promise.reject(this.dead)
    return new Promise((resolve, reject) => {
      this.queued.push({ buf, offset, resolve, reject, ack })
      this.wake()
    })
  }

  /** Resolves once every write queued before it, and every write done before, is durable (fdatasync). */
  sync(): Promise<void> {
    if (this.dead) return Promise.reject(this.dead)
    return new Promise((resolve, reject) => {
      this.queued.push({ buf: null, offset: 0, resolve, reject })
      this.syncs++
      this.wake()
    })
  }

  /** Fail every queued write with err, every write of its jobs not begun, and every later one: what has begun is left to answer or not. */
  abandon(err: Error): void {
    this.dead ??= err
    this.plug.abandon(this)
    this.syncs = 0
    for (const q of this.queued.splice(0)) q.reject(err)
    if (this.jobs === 0) for (const w of this.idleWaiters.splice(0)) w()
  }

  /** Resolves when no job of this queue is in the pool and nothing is queued. */
  idle(): Promise<void> {
    if (this.jobs === 0 && this.queued.length === 0) return Promise.resolve()
    return new Promise((r) => this.idleWaiters.push(r))
  }

  /** For the plug: the queued writes to send now, or null (none, abandoned, or MAX_JOBS in the pool). */
  take(): Queued[] | null {
    this.waiting = false
    if (this.dead || this.jobs >= MAX_JOBS || this.queued.length === 0) return null
    if (this.syncs === 0) {
      const ws = this.queued
      this.queued = []
      return ws
    }
    const k = this.queued.findIndex((w) => w.buf === null)
    let bytes = 0
    for (let i = 0; i < k; i++) bytes += this.queued[i].buf!.length
    // the flush goes once what was queued before it is done, or with it when it is one small job
    const upTo = this.jobs === 0 && bytes <= JOB_BYTES ? k + 1 : k
    if (upTo === 0) return null
    if (upTo > k) this.syncs--
    return this.queued.splice(0, upTo)
  }

  /** For the plug: writes taken back from a job, sent again before those queued since. */
  putBack(ws: Queued[]): void {
    if (this.dead) { for (const w of ws) w.reject(this.dead); return }
    for (const w of ws) if (w.buf === null) this.syncs++
    this.queued = ws.concat(this.queued)
    this.wake()
  }

  /** For the plug: a job holding writes of this queue has answered. */
  jobDone(): void {
    this.jobs--
    if (this.jobs === 0) this.solo = false
    if (this.queued.length) this.wake()
    else if (this.jobs === 0) for (const w of this.idleWaiters.splice(0)) w()
  }

  private wake(): void {
    if (!this.waiting) { this.waiting = true; this.plug.schedule(this) }
  }
}
