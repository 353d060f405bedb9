// `vsm job wait` on a terminal: a progress bar with rate and ETA fed by the daemon's
// job events; off a terminal (or with --json) it just waits and prints the outcome.
import { SingleBar, Presets } from 'cli-progress'
import type { ControlClient } from '../control/client'
import type { JobInfo } from '../control/jobs'
import { formatSize } from './units'

export async function waitWithProgress(client: ControlClient, id: number, showBar: boolean): Promise<JobInfo> {
  if (!showBar) return (await client.call('job.wait', { id })) as JobInfo
  const bar = new SingleBar({
    format: ' {bar} {percentage}% | {doneText} of {totalText} | {rate}/s | ETA {eta_formatted}',
    hideCursor: true,
  }, Presets.shades_classic)
  let started = false
  const render = (j: JobInfo) => {
    const { done, total } = j.progress
    if (!total) return
    const payload = { doneText: formatSize(done), totalText: formatSize(total), rate: formatSize(Math.round(done / Math.max(0.001, (Date.now() - (j.startedAt ?? Date.now())) / 1000))) }
    if (!started) { bar.start(total, done, payload); started = true } else bar.update(done, payload)
  }
  const stop = await client.subscribe((e) => {
    const j = e.data as JobInfo
    if (j?.id === id) render(j)
  }, ['job.progress', 'job.concluded'])
  try {
    const first = (await client.call('job.list')) as JobInfo[]
    const mine = first.find((j) => j.id === id)
    if (mine) render(mine)
    const info = (await client.call('job.wait', { id })) as JobInfo
    render(info)
    return info
  } finally {
    stop()
    if (started) bar.stop()
  }
}
