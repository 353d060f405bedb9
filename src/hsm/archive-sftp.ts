// The SFTP backend of an archive tier: sftp://USER@HOST[:PORT]/PATH through ssh2, key
// login, the host key checked against known_hosts (the replicator's sshClient). An
// object is written to a temporary name, fsynced (fsync@openssh.com), renamed over its
// name (posix-rename@openssh.com) and the directory fsynced, so it is whole and durable
// or absent. The connection is made on first use and again after it drops.
import { randomBytes } from 'crypto'
import type { Client, SFTPWrapper } from 'ssh2'
import { VsmError } from '../block/blockdev'
import { parseSshUrl, sshClient, type SshOptions } from '../replicator/ssh'
import type { ArchiveBackend } from './archive'
import { TMP_PREFIX } from './archive-dir'

export interface SftpTarget { user: string; host: string; port: number; path: string }

/** sftp://USER@HOST[:PORT]/PATH (PATH absolute on the server). */
export function parseSftp(url: string): SftpTarget {
  const t = parseSshUrl(url, 'sftp', 'sftp://USER@HOST[:PORT]/PATH')
  return { ...t, path: t.path.replace(/\/+$/, '') || '/' }
}

const NO_SUCH_FILE = 2

function sftpError(e: unknown, what: string): Error {
  if (e instanceof VsmError) return e
  const code = (e as { code?: unknown }).code
  return new VsmError(code === NO_SUCH_FILE ? 'ENOENT' : 'EIO', `${what}: ${(e as Error).message}`)
}

/** Calls an ssh2 callback-style SFTP method as a promise. */
function call<T>(f: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> {
  return new Promise((res, rej) => f((err, v) => (err ? rej(err) : res(v))))
}

export class SftpBackend implements ArchiveBackend {
  private session: Promise<{ client: Client; sftp: SFTPWrapper }> | null = null
  private closed = false

  constructor(private target: SftpTarget, private opts: SshOptions) {}

  private get where(): string { return `sftp://${this.target.user}@${this.target.host}:${this.target.port}${this.target.path}` }

  private path(name: string): string { return `${this.target.path === '/' ? '' : this.target.path}/${name}` }

  private connect(): Promise<{ client: Client; sftp: SFTPWrapper }> {
    if (this.closed) return Promise.reject(new VsmError('EIO', `archive ${this.where} is closed`))
    if (!this.session) {
      const drop = () => { this.session = null }
      const s = (async () => {
        const client = await sshClient(this.target, this.opts, drop)
        try {
          const sftp = await call<SFTPWrapper>((cb) => client.sftp(cb))
          sftp.on('close', drop)
          return { client, sftp }
        } catch (e) { client.end(); throw e }
      })()
      s.catch(drop)
      this.session = s
    }
    return this.session
  }

  /** Runs `f` on the session; an error that is not about the object itself drops the connection so the next call makes a new one. */
  private async with<T>(what: string, f: (sftp: SFTPWrapper) => Promise<T>): Promise<T> {
    let s: { client: Client; sftp: SFTPWrapper }
    try { s = await this.connect() } catch (e) { throw sftpError(e, `archive ${this.where} unreachable`) }
    try { return await f(s.sftp) } catch (e) {
      const code = (e as { code?: unknown }).code
      if (typeof code !== 'number' && this.session) { this.session = null; s.client.end() }
      throw sftpError(e, `${what} in ${this.where}`)
    }
  }

  /** Opens `path` with `flags`, runs `f` on the handle, closes it. */
  private async withHandle<T>(sftp: SFTPWrapper, path: string, flags: 'wx' | 'r', f: (h: Buffer) => Promise<T>): Promise<T> {
    const h = await call<Buffer>((cb) => sftp.open(path, flags, { mode: 0o600 }, cb))
    try { return await f(h) } finally { await call<void>((cb) => sftp.close(h, cb)).catch(() => undefined) }
  }

  write(name: string, data: Buffer): Promise<void> {
    return this.with(`writing archive object ${name}`, async (sftp) => {
      const tmp = this.path(`${TMP_PREFIX}${name}-${randomBytes(6).toString('hex')}`)
      try {
        await this.withHandle(sftp, tmp, 'wx', async (h) => {
          if (data.length) await call<void>((cb) => sftp.write(h, data, 0, data.length, 0, cb))
          await call<void>((cb) => sftp.ext_openssh_fsync(h, cb))
        })
        await call<void>((cb) => sftp.ext_openssh_rename(tmp, this.path(name), cb))
      } catch (e) {
        await call<void>((cb) => sftp.unlink(tmp, cb)).catch(() => undefined)
        throw e
      }
      // the rename's directory entry: opening a directory read-only and fsyncing it works on the server's Linux
      await this.withHandle(sftp, this.target.path, 'r', (h) => call<void>((cb) => sftp.ext_openssh_fsync(h, cb)))
    })
  }

  read(name: string, pos: number, len: number): Promise<Buffer> {
    return this.with(`reading archive object ${name}`, (sftp) => this.withHandle(sftp, this.path(name), 'r', async (h) => {
      const buf = Buffer.allocUnsafe(len)
      let got = 0
      while (got < len) {
        const n = await new Promise<number>((res, rej) => sftp.read(h, buf, got, len - got, pos + got, (err, nb) => {
          // end of file comes as an EOF status, not as 0 bytes
          if (err && (err as { code?: unknown }).code === 1) res(0)
          else if (err) rej(err)
          else res(nb)
        }))
        if (!n) break
        got += n
      }
      return buf.subarray(0, got)
    }))
  }

  remove(name: string): Promise<void> {
    return this.with(`removing archive object ${name}`, (sftp) => call<void>((cb) => sftp.unlink(this.path(name), cb)).catch((e) => {
      if ((e as { code?: unknown }).code !== NO_SUCH_FILE) throw e
    }))
  }

  list(): Promise<string[]> {
    return this.with('listing the archive', async (sftp) => {
      const entries = await call<{ filename: string }[]>((cb) => sftp.readdir(this.target.path, cb))
      return entries.map((e) => e.filename).filter((n) => n !== '.' && n !== '..' && !n.startsWith(TMP_PREFIX))
    })
  }

  async probe(): Promise<void> {
    await this.with('opening the archive', async (sftp) => {
      const st = await call<{ isDirectory(): boolean }>((cb) => sftp.stat(this.target.path, cb))
      if (!st.isDirectory()) throw new VsmError('ENOTDIR', `${this.target.path} is not a directory`)
    })
  }

  async close(): Promise<void> {
    this.closed = true
    const s = this.session
    this.session = null
    if (s) await s.then((x) => x.client.end(), () => undefined)
  }
}
