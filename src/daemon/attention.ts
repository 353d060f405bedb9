// What needs an operator's attention, for `vsm status`: a file system a failed commit
// stopped, degraded or failed volumes, missing or failed devices, and thin device files
// that may outgrow the file system holding them, each with the reason and the command
// that fixes it. A pure function of the pool's, the jobs', the fs's and the host's
// state, so the advice can be tested case by case.
import type { JobInfo } from '../control/jobs'
import type { DeviceInfo, VolumeInfo } from '../volume/pool'
import type { HostSpace } from './host-space'
import { formatSize } from '../cli/units'

export interface Attention {
  /** What the line is about: `volume vol0`, `device d1`. */
  object: string
  problem: string
  /** The command that fixes it, or what to wait for; absent when nothing is to be done by hand. */
  fix?: string
}

const running = (jobs: JobInfo[], kind: RegExp) => jobs.find((j) => j.state !== 'concluded' && kind.test(j.kind))

/**
 * A backing file whose file system filled up (thin files grow as they are written): its
 * writes failed with ENOSPC, which is no fault of the device. Room, then the device back
 * online (its copies resynced by what they missed), is the fix, not a new device.
 */
const fullFix = (d: DeviceInfo) => `free space on the file system holding ${d.path}, then vsm device online ${d.name}`

export function attention(devices: DeviceInfo[], volumes: VolumeInfo[], jobs: JobInfo[], hosts: HostSpace[] = [], fsBroken: string | null = null): Attention[] {
  const out: Attention[] = []
  if (fsBroken) out.push({ object: 'file system', problem: `serves nothing more: ${fsBroken}`, fix: 'remedy the cause, then vsm down --force; vsm up (what was committed is replayed)' })
  const byId = new Map(devices.map((d) => [d.id, d]))
  const full = new Set(volumes.flatMap((v) => v.members.filter((m) => m.state === 'failed' && /ENOSPC/.test(m.reason ?? '')).map((m) => m.deviceId)))
  for (const d of devices) {
    if (d.state === 'missing') out.push({ object: `device ${d.name}`, problem: `missing at ${d.path}${d.reason ? `: ${d.reason}` : ''}`, fix: `attach it at ${d.path} and restart vsm, or vsm volume replace VOLUME ${d.name} NEWDEV` })
    else if (d.state === 'failed' && full.has(d.id)) out.push({ object: `device ${d.name}`, problem: `failed: the file system holding ${d.path} is full (ENOSPC)`, fix: fullFix(d) })
    else if (d.state === 'failed') out.push({ object: `device ${d.name}`, problem: 'failed (I/O errors)', fix: `vsm device add NEWDEV PATH, then vsm volume replace VOLUME ${d.name} NEWDEV for each volume on it` })
  }
  for (const v of volumes) {
    if (v.state === 'healthy') continue
    const bad = v.members.filter((m) => m.state !== 'ok')
    const names = bad.map((m) => `${byId.get(m.deviceId)?.name ?? m.device} ${m.state}${m.reason ? ` (${m.reason})` : ''}`).join(', ')
    const problem = `${v.state}: ${names || 'members not in service'}`
    const rebuild = running(jobs, /rebuild|resync/)
    if (v.rebuild && rebuild) {
      out.push({ object: `volume ${v.name}`, problem, fix: `a rebuild is running: vsm job wait ${rebuild.id}` })
      continue
    }
    const offline = bad.map((m) => byId.get(m.deviceId)).find((d) => d?.state === 'offline')
    const filled = bad.map((m) => byId.get(m.deviceId)).find((d) => d && full.has(d.id))
    const first = byId.get(bad[0]?.deviceId ?? '')?.name ?? 'DEV'
    out.push({
      object: `volume ${v.name}`,
      problem,
      fix: v.state === 'failed'
        ? `too many members lost for ${v.layout} to serve; bring back ${first} (vsm device online ${first}) or restore from a replica`
        : offline ? `vsm device online ${offline.name}, or vsm volume replace ${v.name} ${offline.name} NEWDEV`
          : filled ? fullFix(filled)
            : `vsm volume replace ${v.name} ${first} NEWDEV (vsm device add NEWDEV PATH first if no device has room)`,
    })
  }
  // last: a warning before the fact
  for (const h of hosts) {
    if (h.growth <= h.free) continue
    out.push({
      object: `file system of ${h.dir}`,
      problem: `device file${h.devices.length > 1 ? 's' : ''} ${h.devices.join(', ')} may still grow by ${formatSize(h.growth)}, and it has ${formatSize(h.free)} free: once it is full their writes fail (ENOSPC)`,
      fix: `free space there, or move a device to a file system with room: vsm device add NEWDEV PATH, then vsm volume replace VOLUME DEV NEWDEV`,
    })
  }
  return out
}
