// The replication wire: the messages primary and secondary exchange, the Link they
// travel over (an SSH exec channel in production, a seeded faulty simulation in
// tests), the home's replica socket `vsm replica serve` relays it to, and the framing
// that carries them on a byte stream: u32 frame length, u32 JSON length, the JSON,
// then the raw data of a write record.
import { promises as fsp } from 'fs'
import { createServer, Server } from 'net'
import { join } from 'path'
import type { Duplex } from 'stream'
import type { RecordKind } from './log'

export interface VolumeSpec { name: string; size: number }

export type ToSecondary =
  | { t: 'hello'; group: string; logId: string; volumes: VolumeSpec[] }
  | { t: 'rec'; seq: number; kind: RecordKind; vol: number; offset: number; length: number; time: number }
  /** Asks for an ack: the primary waits on a durable position and heard nothing for a while. */
  | { t: 'ping' }
  // failback, from the old primary to the site that took over:
  /** Stop serving the group (refused while its disks are open unless force) and become its failback source. */
  | { t: 'step-down'; force: boolean }
  /** The bytes of a range of the replicas (the source answers with `data`). */
  | { t: 'read'; id: number; vol: number; offset: number; length: number }
  /** The old primary holds every changed range: follow its log again from seq `durable`. */
  | { t: 'failback-done'; durable: number }

export type ToPrimary =
  /** next: the seq the secondary applies next; durable: everything up to it is on its stable storage. */
  | { t: 'welcome'; next: number; durable: number }
  | { t: 'ack'; next: number; durable: number }
  /** A record arrived out of order: send again from `next`. */
  | { t: 'nack'; next: number }
  /** The checksums (crc32 per VERIFY_BLOCK) of a verify record's range, as applied up to it. */
  | { t: 'sums'; seq: number; sums: number[] }
  | { t: 'error'; code: string; message: string }
  /**
   * Instead of a welcome: this site took the group over (vsm repl takeover) at
   * generation `generation`, holding the primary's stream up to seq `point`; it has
   * since changed `changedBytes` (bytes of regions) of the group's volumes.
   */
  | { t: 'taken-over'; generation: string; parent: string; point: number; at: number; changedBytes: number }
  /** Instead of a welcome, from a site that stepped down for a failback: the ranges it changed since the takeover. */
  | { t: 'failback-source'; generation: string; point: number; ranges: Array<[number, number, number]> }
  | { t: 'data'; id: number }
  /** The source follows the old primary's log again. */
  | { t: 'failback-complete' }

export type Message = ToSecondary | ToPrimary

/** One end of a message channel; data rides along with a write record. */
export interface Link<In extends Message, Out extends Message> {
  send(msg: Out, data?: Buffer): void
  onMessage(fn: (msg: In, data?: Buffer) => void): void
  /** Each listener is called once, when the link is gone for whatever reason. */
  onClose(fn: (why: string) => void): void
  close(why?: string): void
}

export type PrimaryLink = Link<ToPrimary, ToSecondary>
export type SecondaryLink = Link<ToSecondary, ToPrimary>

const MAX_FRAME = 8 << 20

export function encodeFrame(msg: Message, data?: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(msg))
  const head = Buffer.alloc(8)
  head.writeUInt32LE(4 + json.length + (data?.length ?? 0), 0)
  head.writeUInt32LE(json.length, 4)
  return Buffer.concat(data ? [head, json, data] : [head, json])
}

/** A Link over a byte stream (a socket, an SSH channel, stdin/stdout). */
export function streamLink<In extends Message, Out extends Message>(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, end?: Duplex | (() => void)): Link<In, Out> {
  let onMsg: (msg: In, data?: Buffer) => void = () => undefined
  const closers: Array<(why: string) => void> = []
  let closed = false
  let pending: Buffer = Buffer.alloc(0)
  const close = (why: string) => {
    if (closed) return
    closed = true
    input.removeListener('data', onData)
    if (typeof end === 'function') end()
    else end?.destroy()
    for (const fn of closers) fn(why)
  }
  const onData = (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
    while (!closed && pending.length >= 4) {
      const len = pending.readUInt32LE(0)
      if (len < 4 || len > MAX_FRAME) { close(`bad frame length ${len}`); return }
      if (pending.length < 4 + len) return
      const jsonLen = pending.readUInt32LE(4)
      if (jsonLen > len - 4) { close('bad frame'); return }
      let msg: In
      try { msg = JSON.parse(pending.toString('utf8', 8, 8 + jsonLen)) as In } catch { close('bad frame JSON'); return }
      const data = len - 4 > jsonLen ? Buffer.from(pending.subarray(8 + jsonLen, 4 + len)) : undefined
      pending = pending.subarray(4 + len)
      onMsg(msg, data)
    }
  }
  input.on('data', onData)
  input.on('end', () => close('end of stream'))
  input.on('close', () => close('stream closed'))
  input.on('error', (e: Error) => close(e.message))
  output.on('error', (e: Error) => close(e.message))
  return {
    send: (msg, data) => { if (!closed) output.write(encodeFrame(msg, data)) },
    onMessage: (fn) => { onMsg = fn },
    onClose: (fn) => { closers.push(fn) },
    close: (why = 'closed') => close(why),
  }
}

/** Where `vsm replica serve` hands the wire to the home's daemon. */
export const replicaSocket = (home: string) => join(home, 'replica.sock')

/** Serves the home's replica socket (owner only): each connection becomes a link. */
export async function listenReplicaSocket(home: string, onLink: (link: SecondaryLink) => void): Promise<Server> {
  const path = replicaSocket(home)
  await fsp.rm(path, { force: true })
  const server = createServer((sock) => onLink(streamLink<ToSecondary, ToPrimary>(sock, sock, sock)))
  await new Promise<void>((res, rej) => { server.once('error', rej); server.listen(path, res) })
  await fsp.chmod(path, 0o600)
  return server
}
