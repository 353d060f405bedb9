// The daemon's one event sink: every state change of every component (daemon start and
// stop, crash recovery, devices, volumes, disks, jobs) is published here once, logged
// by pino with its object and reason, and handed to the subscribers (the control
// socket streams it to `vsm events` clients, as QMP events). Components get the sink
// as an explicit input; a component without one publishes into a NULL_SINK.
import type { Logger } from 'pino'

export type EventLevel = 'debug' | 'info' | 'warn' | 'error' | 'fatal'

export interface VsmEvent {
  event: string
  data: object
  level: EventLevel
  /** Epoch milliseconds. */
  timestamp: number
}

/** What a component needs to report a state change: the event name, its object and reason, how serious. */
export interface EventSink {
  publish(event: string, data: object, level?: EventLevel): void
}

export const NULL_SINK: EventSink = { publish: () => {} }

export class Events implements EventSink {
  private readonly subscribers = new Set<(e: VsmEvent) => void>()

  /** Without a logger, events only reach subscribers (a control server on its own, in tests). */
  constructor(private readonly log?: Logger) {}

  publish(event: string, data: object, level: EventLevel = 'info'): void {
    const e: VsmEvent = { event, data, level, timestamp: Date.now() }
    // `event` first so a log line reads as what happened, then the object and reason.
    this.log?.[level]({ event, ...data }, event)
    for (const fn of this.subscribers) {
      // A throwing subscriber is a bug elsewhere; it must not stop the others or the publisher.
      try { fn(e) } catch (err) { this.log?.error({ err, failedEvent: event }, 'event subscriber failed') }
    }
  }

  /** Calls fn for every event from now on; returns the function that stops it. */
  subscribe(fn: (e: VsmEvent) => void): () => void {
    this.subscribers.add(fn)
    return () => { this.subscribers.delete(fn) }
  }
}
