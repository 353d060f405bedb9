// The real transport: an ssh2 connection to the secondary host with key
// authentication, the host key checked against a known_hosts file (an unknown or
// changed key is refused before anything is sent), and `vsm replica serve --home DIR`
// run on an exec channel whose stdin/stdout carry the replication wire.
import { createHmac } from 'crypto'
import { readFileSync } from 'fs'
import { homedir } from 'os'
import { join } from 'path'
import { Client } from 'ssh2'
import { VsmError } from '../block/blockdev'
import { PrimaryLink, streamLink, ToPrimary, ToSecondary } from './wire'

export interface Target { user: string; host: string; port: number; home: string }

/** SCHEME://USER@HOST[:PORT]/PATH with an absolute PATH free of `..`; `shape` names the form in the error. */
export function parseSshUrl(url: string, scheme: string, shape: string): { user: string; host: string; port: number; path: string } {
  const m = new RegExp(`^${scheme}://([A-Za-z0-9._-]+)@([A-Za-z0-9.-]+|\\[[0-9a-fA-F:]+\\])(?::(\\d{1,5}))?(/[^\\0]*)$`).exec(url)
  if (!m) throw new VsmError('EINVAL', `bad target ${JSON.stringify(url)}: expected ${shape}`)
  const port = m[3] ? Number(m[3]) : 22
  if (port < 1 || port > 65535) throw new VsmError('EINVAL', `bad port in ${url}`)
  if (m[4].split('/').includes('..')) throw new VsmError('EINVAL', `the path may not contain ..: ${url}`)
  return { user: m[1], host: m[2].replace(/^\[|\]$/g, ''), port, path: m[4] }
}

/** ssh://USER@HOST[:PORT]/REMOTE_HOME (the home is an absolute path on the secondary). */
export function parseTarget(url: string): Target {
  const { path, ...rest } = parseSshUrl(url, 'ssh', 'ssh://USER@HOST[:PORT]/REMOTE_HOME')
  return { ...rest, home: path }
}

export interface SshOptions {
  identity?: string
  knownHosts?: string
  remoteVsm?: string
  /** How long a TCP connect plus handshake may take. */
  readyTimeoutMs?: number
}

const defaultKnownHosts = () => join(homedir(), '.ssh', 'known_hosts')
const defaultIdentity = () => join(homedir(), '.ssh', 'id_ed25519')

/** The keys known_hosts lists for host:port (plain, [host]:port and hashed |1| entries). */
export function knownKeys(text: string, host: string, port: number): string[] {
  const name = port === 22 ? host : `[${host}]:${port}`
  const keys: string[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 3 || f[0].startsWith('#') || f[0].startsWith('@')) continue
    const match = f[0].split(',').some((p) => {
      if (p.startsWith('|1|')) {
        const [, , salt, hash] = p.split('|')
        return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash
      }
      return p === name
    })
    if (match) keys.push(f[2])
  }
  return keys
}

function shellQuote(s: string): string { return `'${s.replace(/'/g, `'\\''`)}'` }

/**
 * An ssh2 client logged in to user@host:port with key authentication, the host key
 * checked against known_hosts first (an unknown or changed key is refused, EACCES,
 * before anything is sent). `onClose` hears a connection that drops after it is ready.
 * The replicator's link and the HSM's SFTP archive both connect through it.
 */
export function sshClient(target: { user: string; host: string; port: number }, opts: SshOptions, onClose?: (why: string) => void): Promise<Client> {
  const knownHostsFile = opts.knownHosts ?? defaultKnownHosts()
  let known: string[]
  let privateKey: Buffer
  try { known = knownKeys(readFileSync(knownHostsFile, 'utf8'), target.host, target.port) } catch (e) {
    return Promise.reject(new VsmError('ENOENT', `cannot read known hosts ${knownHostsFile}: ${(e as Error).message}`))
  }
  try { privateKey = readFileSync(opts.identity ?? defaultIdentity()) } catch (e) {
    return Promise.reject(new VsmError('ENOENT', `cannot read identity ${opts.identity ?? defaultIdentity()}: ${(e as Error).message}`))
  }
  return new Promise((resolve, reject) => {
    const client = new Client()
    let refused: string | null = null
    let settled = false
    const fail = (e: Error) => {
      if (!settled) { settled = true; client.end(); reject(e) } else onClose?.(e.message)
    }
    client.on('error', (e) => fail(refused ? new VsmError('EACCES', refused) : e))
    client.on('close', () => fail(new VsmError('ECONNRESET', refused ?? 'ssh connection closed')))
    client.on('ready', () => {
      settled = true
      // Without it a small message (a sync-mode flush, its ack, an SFTP request) sent while
      // an earlier one is unacknowledged waits for the peer's delayed ACK: 40 ms a round trip
      client.setNoDelay(true)
      resolve(client)
    })
    client.connect({
      host: target.host, port: target.port, username: target.user, privateKey,
      readyTimeout: opts.readyTimeoutMs ?? 20_000,
      keepaliveInterval: 5000,
      hostVerifier: (key: Buffer) => {
        const b64 = key.toString('base64')
        if (known.includes(b64)) return true
        refused = known.length
          ? `host key of ${target.host}:${target.port} does not match ${knownHostsFile}: refusing to connect (it changed, or someone is in the middle)`
          : `host ${target.host}:${target.port} is not in ${knownHostsFile}: refusing an unknown host key`
        return false
      },
    })
  })
}

/** Connects and starts the remote agent; resolves with the link once the channel is open. */
export async function sshConnect(target: Target, opts: SshOptions): Promise<PrimaryLink> {
  const client = await sshClient(target, opts)
  return new Promise((resolve, reject) => {
    let started = false
    client.on('close', () => { if (!started) reject(new VsmError('ECONNRESET', 'ssh connection closed before the agent started')) })
    const cmd = `${opts.remoteVsm ?? 'vsm'} replica serve --home ${shellQuote(target.home)}`
    client.exec(cmd, (err, stream) => {
      if (err) { client.end(); reject(err); return }
      let stderr = ''
      stream.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000) })
      const link = streamLink<ToPrimary, ToSecondary>(stream, stream, () => client.end())
      stream.on('exit', (code: number | null) => { if (code) link.close(`remote agent exited with status ${code}: ${stderr.trim().split('\n').pop() ?? ''}`) })
      started = true
      resolve(link)
    })
  })
}
