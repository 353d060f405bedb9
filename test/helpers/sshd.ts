// A real OpenSSH sshd on 127.0.0.1 for tests that reach a "remote" site: a generated
// host key, key-only login with a generated client key, and a known_hosts file that
// lists the host key. The replicator's and the HSM's SFTP tests start it.
import { ChildProcess, execFileSync, spawn } from 'child_process'
import { readFileSync, writeFileSync } from 'fs'
import { connect, createServer } from 'net'
import { join } from 'path'

export interface Sshd {
  /** The address it listens on. */
  host: string
  port: number
  /** The client's private key (its public half is the only authorized key). */
  identity: string
  /** A known_hosts file that lists the server's host key. */
  knownHosts: string
  /** A known_hosts line for the key in `pubFile` under this server's [host]:port name. */
  hostLine(pubFile: string): string
  stop(): void
}

export const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file])

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const p = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return p
}

/**
 * Starts sshd with its keys and config in `dir`; resolves once it accepts connections.
 * `at`: listen on another address, inside a network namespace (helpers/netns.ts).
 */
export async function startSshd(dir: string, at: { host: string; netns?: string } = { host: '127.0.0.1' }): Promise<Sshd> {
  keygen(join(dir, 'host'))
  keygen(join(dir, 'client'))
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client.pub')))
  const port = await freePort()
  const hostLine = (pub: string) => `[${at.host}]:${port} ${readFileSync(pub, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ')}\n`
  writeFileSync(join(dir, 'known_hosts'), hostLine(join(dir, 'host.pub')))
  writeFileSync(join(dir, 'sshd_config'), [
    `Port ${port}`, `ListenAddress ${at.host}`, `HostKey ${join(dir, 'host')}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes', 'PermitRootLogin prohibit-password', 'StrictModes no', 'UsePAM no',
    'Subsystem sftp internal-sftp',
    // a session whose client died behind a cut link ends in seconds, not hours
    'ClientAliveInterval 2', 'ClientAliveCountMax 2', '',
  ].join('\n'))
  execFileSync('mkdir', ['-p', '/run/sshd'])
  const argv = ['/usr/sbin/sshd', '-D', '-e', '-f', join(dir, 'sshd_config')]
  const sshd: ChildProcess = at.netns ? spawn('ip', ['netns', 'exec', at.netns, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
  // sessions outlive the listener and hold its stderr: without the destroy, this process would wait for them
  const stop = () => { sshd.stderr?.destroy(); sshd.kill('SIGTERM') }
  process.on('exit', stop)
  const deadline = Date.now() + 20_000
  for (;;) {
    const up = await new Promise<boolean>((res) => {
      const c = connect(port, at.host, () => { c.destroy(); res(true) })
      c.on('error', () => res(false))
    })
    if (up) break
    if (Date.now() > deadline || sshd.exitCode !== null) { stop(); throw new Error(`sshd did not start on port ${port}`) }
    await new Promise((r) => setTimeout(r, 100))
  }
  return { host: at.host, port, identity: join(dir, 'client'), knownHosts: join(dir, 'known_hosts'), hostLine, stop }
}
