// Who owns a disk: `--owner USER[:GROUP]` and `--mode MODE` turned into a uid, gid
// and permission bits. Names are resolved through the system's user and group
// databases (getent, so NSS sources count as they do for ls and chown); a user
// without :GROUP gets its primary group, as chown(1) does with USER: .
import { execFile } from 'child_process'
import { VsmError } from '../block/blockdev'

export interface Owner { uid: number; gid: number }

const ID_MAX = 0xfffffffe // (uid_t)-1 means "no change" to chown(2)
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*\$?$/

/** One entry of a getent database, split on ':'; null when there is none. */
function getent(db: 'passwd' | 'group', key: string): Promise<string[] | null> {
  return new Promise((res, rej) => {
    execFile('getent', [db, key], { timeout: 10_000 }, (err, stdout) => {
      // exit status 2: no such key
      if (err) return (err as { code?: unknown }).code === 2 ? res(null) : rej(new VsmError('EIO', `getent ${db} ${key}: ${err.message}`))
      res(stdout.split('\n')[0].split(':'))
    })
  })
}

function numericId(s: string, what: string): number | null {
  if (!/^\d+$/.test(s)) return null
  const n = Number(s)
  if (!Number.isSafeInteger(n) || n > ID_MAX) throw new VsmError('EINVAL', `${what} id ${s} out of range (0..${ID_MAX})`)
  return n
}

async function resolveUser(s: string): Promise<{ uid: number; gid: number | null }> {
  const n = numericId(s, 'user')
  if (n !== null) {
    const e = await getent('passwd', s)
    return { uid: n, gid: e ? Number(e[3]) : null }
  }
  if (!NAME.test(s)) throw new VsmError('EINVAL', `bad user name ${JSON.stringify(s)}`)
  const e = await getent('passwd', s)
  if (!e) throw new VsmError('ENOENT', `no such user: ${s}`)
  return { uid: Number(e[2]), gid: Number(e[3]) }
}

export async function resolveGroup(s: string): Promise<number> {
  const n = numericId(s, 'group')
  if (n !== null) return n
  if (!NAME.test(s)) throw new VsmError('EINVAL', `bad group name ${JSON.stringify(s)}`)
  const e = await getent('group', s)
  if (!e) throw new VsmError('ENOENT', `no such group: ${s}`)
  return Number(e[2])
}

/** 'alice', 'alice:kvm', '1000:1000', ':kvm' is refused (the user is required). */
export async function resolveOwner(spec: unknown): Promise<Owner> {
  if (typeof spec !== 'string' || !spec) throw new VsmError('EINVAL', 'owner must be USER or USER:GROUP')
  const i = spec.indexOf(':')
  const user = i < 0 ? spec : spec.slice(0, i)
  const group = i < 0 ? '' : spec.slice(i + 1)
  if (!user || (i >= 0 && !group)) throw new VsmError('EINVAL', `bad owner ${JSON.stringify(spec)}: use USER or USER:GROUP`)
  const u = await resolveUser(user)
  if (group) return { uid: u.uid, gid: await resolveGroup(group) }
  if (u.gid === null) throw new VsmError('EINVAL', `user id ${user} has no passwd entry to take a group from: give USER:GROUP`)
  return { uid: u.uid, gid: u.gid }
}

/** Permission bits: a number, or octal text ('640', '0640'); 0..07777. */
export function parseMode(v: unknown): number {
  const n = typeof v === 'string' && /^0?[0-7]{1,4}$/.test(v) ? parseInt(v, 8) : v
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > 0o7777) {
    throw new VsmError('EINVAL', `bad mode ${JSON.stringify(v)}: octal permission bits, 0 to 7777`)
  }
  return n
}
