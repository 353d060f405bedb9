// A network namespace joined to this one by a veth pair, for tests that cut a link for
// real: a server started inside it (helpers/sshd.ts: startSshd(dir, { host: nsIp, netns }))
// is reached at nsIp, and down() takes the host's end of the pair down, as a pulled cable
// would. remove() deletes both (call it in finally/after).
import { execFileSync } from 'child_process'

export interface Netns { name: string; nsIp: string; down(): void; remove(): void }

export function makeNetns(tag: string): Netns {
  const id = process.pid % 10000
  const name = `vsm-${tag}-${id}`
  const host = `vsmh${id}`, peer = `vsmp${id}`
  // a /30 of 10.231.0.0/16 per process, so runs side by side do not collide
  const net = `10.231.${id % 250}`, base = (Math.floor(id / 250) % 63) * 4
  const hostIp = `${net}.${base + 1}`, nsIp = `${net}.${base + 2}`
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' })
  const remove = () => {
    try { ip('link', 'del', host) } catch { /* gone with the namespace, or never made */ }
    try { ip('netns', 'del', name) } catch { /* never made */ }
  }
  remove() // a leftover of a killed run
  try {
    ip('netns', 'add', name)
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer)
    ip('link', 'set', peer, 'netns', name)
    ip('addr', 'add', `${hostIp}/30`, 'dev', host)
    ip('link', 'set', host, 'up')
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${nsIp}/30`, 'dev', peer)
    ip('netns', 'exec', name, 'ip', 'link', 'set', peer, 'up')
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up')
  } catch (e) {
    remove()
    throw e
  }
  return { name, nsIp, down: () => { ip('link', 'set', host, 'down') }, remove }
}
