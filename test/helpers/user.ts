// A throwaway system user for tests of what a non-root caller may do: made with its
// own group, no home and no login shell; run() drops to it (setuid/setgid also drop
// every supplementary group); remove() deletes it (call it in finally/after).
import { execFileSync, spawnSync, SpawnSyncOptions } from 'child_process'

export interface TestUser {
  name: string
  uid: number
  gid: number
  run(cmd: string, args: string[], opts?: SpawnSyncOptions): { status: number | null; stdout: string; stderr: string }
  remove(): void
}

export function makeTestUser(prefix: string): TestUser {
  const name = `${prefix}${process.pid % 100000}`
  spawnSync('userdel', [name]) // a leftover of a killed run
  execFileSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name])
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }))
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }))
  return {
    name, uid, gid,
    run: (cmd, args, opts = {}) => {
      const r = spawnSync(cmd, args, { ...opts, uid, gid, encoding: 'utf8' })
      return { status: r.status, stdout: r.stdout as string, stderr: r.stderr as string }
    },
    remove: () => { spawnSync('userdel', [name]) },
  }
}
