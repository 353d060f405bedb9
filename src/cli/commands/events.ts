// `vsm events`: the daemon's state changes as they happen (the socket's event
// subscription), one line each: local time, level, event and its object and reason;
// with --json, the event frames as JSON lines.
import { Command } from 'commander'
import type { EventFrame } from '../../control/client'
import type { JobInfo } from '../../control/jobs'
import { globals, print, withClient } from '../call'
import { homeDir } from '../home'
import { formatSize } from '../units'

export function registerEvents(program: Command) {
  program.command('events')
    .description('stream state changes (devices, volumes, disks, jobs, daemon) as they happen, until Ctrl-C or the daemon stops')
    .action(async (_o, cmd: Command) => {
      const { json, home } = globals(cmd)
      await withClient(cmd, async (c) => {
        const closed = new Promise<void>((resolve) => c.onClose(() => resolve()))
        await c.subscribe((e) => print(json ? JSON.stringify(e) : formatEvent(e)))
        // stderr, so a --json reader sees only events; tells a script the subscription is live
        process.stderr.write(`vsm events: following ${homeDir(home)} (Ctrl-C to stop)\n`)
        await closed
      })
    })
}

const pad2 = (n: number) => String(n).padStart(2, '0')

function localTime(ms: number): string {
  const d = new Date(ms)
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
}

/** Nested objects flatten to dotted keys; sizes and times read as such, never as raw numbers. */
function fields(o: unknown, prefix = ''): string[] {
  if (o === null || typeof o !== 'object') return prefix ? [`${prefix}=${o}`] : []
  return Object.entries(o).flatMap(([k, v]) => {
    const key = prefix ? `${prefix}.${k}` : k
    if (v === undefined) return []
    if (typeof v === 'number' && /(size|bytes)$/i.test(k)) return [`${key}=${formatSize(v)}`]
    if (typeof v === 'number' && /(At|until|Until)$/.test(k)) return [`${key}=${localTime(v)}`]
    if (typeof v === 'string') return [`${key}=${/\s/.test(v) ? JSON.stringify(v) : v}`]
    return fields(v, key)
  })
}

/** A job event names the job, its state and how far it got; its full record is in --json. */
function jobFields(j: JobInfo): string[] {
  const { done, total } = j.progress
  const out = [`job=${j.id}`, `kind=${j.kind}`, `state=${j.state}`]
  if (total > 0) out.push(`progress=${Math.floor((100 * done) / total)}%`)
  if (j.error) out.push(...fields({ error: j.error }))
  if (j.description) out.push(...fields({ description: j.description }))
  return out
}

export function formatEvent(e: EventFrame): string {
  const data = e.event.startsWith('job.') ? jobFields(e.data) : fields(e.data)
  return [localTime(e.timestamp), (e.level ?? 'info').padEnd(5), e.event, ...data].join('  ')
}
