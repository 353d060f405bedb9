// vsm repl ... (replication groups on a primary, status on either site) and
// vsm replica serve (the remote agent the primary starts over SSH: it pipes its
// stdin/stdout to the secondary daemon's replica socket).
import { Command } from 'commander'
import { connect } from 'net'
import { resolve } from 'path'
import type { VerifyReport } from '../../replicator/group'
import { replicaSocket } from '../../replicator/wire'
import { call, globals, print, withClient } from '../call'
import { waitWithProgress } from '../progress'
import { homeDir } from '../home'
import { table } from '../table'
import { formatDate, formatSize, parseDuration, parseSize } from '../units'

const pct = (f: number | undefined) => (f === undefined ? '-' : `${(100 * f).toFixed(1)}%`)

function statusTable(rows: any[]): string {
  if (!rows.length) return 'no replication groups'
  return table(['GROUP', 'ROLE', 'MODE', 'STATE', 'LAG', 'LAG(s)', 'LOG FILL', 'TARGET / ERROR'], rows.map((r) => [
    r.group, r.role, r.mode ?? '-', r.state, r.lagBytes === undefined ? '-' : formatSize(r.lagBytes),
    r.lagSeconds === undefined ? '-' : r.lagSeconds.toFixed(1), pct(r.logFill),
    r.takenOver ? `${r.target}` : r.serving ? `serving since ${r.takenOverAt} (${formatSize(r.changedBytes)} changed here)` : r.lastError ? `${r.target}: ${r.lastError}` : (r.target ?? (r.connected ? 'primary connected' : 'waiting for the primary')),
  ])) + rows.filter((r) => r.next).map((r) => `\n${r.group}: ${r.next}`).join('')
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** After a takeover the daemon restarts its stack in place: waits until its view is mounted. */
async function waitServing(cmd: Command): Promise<string> {
  const deadline = Date.now() + 120_000
  let last = ''
  for (;;) {
    try {
      const st = await withClient(cmd, (c) => c.call('status', {}))
      if (st.mount) return st.mount
      last = `role ${st.role ?? 'primary'}`
    } catch (e) { last = (e as Error).message }
    if (Date.now() > deadline) throw new Error(`the daemon did not start serving after the takeover (${last}); see vsm status and its log`)
    await sleep(200)
  }
}

export function registerRepl(program: Command) {
  const repl = program.command('repl').description('replicated volume groups: ship every write, in order, to a secondary site over SSH')
  repl.command('create <group>').description('replicate volumes (default: every volume of the fs) to a secondary home')
    .requiredOption('--target <url>', 'ssh://USER@HOST[:PORT]/REMOTE_HOME of a home started with vsm up --secondary')
    .option('--volumes <list>', 'comma-separated volumes (default: all the fs spans)')
    .option('--mode <mode>', 'async: acknowledged once in the local log; sync: a flush returns once the secondary has it durable; sync-fallback: sync, async after --sync-timeout without the secondary until it catches up', 'async')
    .option('--sync-timeout <seconds>', 'sync-fallback: how long a flush waits for the secondary (default 10)')
    .option('--identity <key>', 'private key for SSH (default ~/.ssh/id_ed25519)')
    .option('--known-hosts <file>', 'host keys accepted (default ~/.ssh/known_hosts); an unknown or changed key is refused')
    .option('--remote-vsm <cmd>', 'the vsm command on the secondary host', 'vsm')
    .option('--log-size <size>', 'size of the replication log volume (K, M, G)', '64M')
    .option('--rate <size>', 'bytes per second shipping may use (K, M, G; default unlimited)')
    .action((group: string, o, cmd: Command) => call(cmd, 'repl.create', {
      group, target: o.target, mode: o.mode, remoteVsm: o.remoteVsm, logSize: parseSize(o.logSize), rate: o.rate === undefined ? undefined : parseSize(o.rate),
      syncTimeoutMs: o.syncTimeout === undefined ? undefined : Math.round(Number(o.syncTimeout) * 1000),
      volumes: o.volumes === undefined ? undefined : String(o.volumes).split(',').filter(Boolean),
      identity: o.identity === undefined ? undefined : resolve(o.identity),
      knownHosts: o.knownHosts === undefined ? undefined : resolve(o.knownHosts),
    }, (r) => `group ${r.group}: ${r.volumes.join(', ')} → ${r.target} (${r.mode}); initial sync: job ${r.syncJob} (vsm repl status ${r.group})`))
  repl.command('status [group]').description('mode, state, lag and log fill of each group')
    .action((group: string | undefined, _o, cmd: Command) => call(cmd, 'repl.status', group === undefined ? {} : { group }, statusTable))
  for (const [name, verb] of [['pause', 'paused'], ['resume', 'resumed']] as const) {
    repl.command(`${name} <group>`).description(name === 'pause' ? 'stop shipping (writes go on into the log; sync mode does not wait meanwhile)' : 'ship again from where the secondary stands')
      .action((group: string, _o, cmd: Command) => call(cmd, `repl.${name}`, { group }, (r) => `group ${r.group}: ${verb} (${r.state})`))
  }

  repl.command('verify <group>').description('compare every block of the group\'s volumes with the secondary online (a job; a progress bar on a terminal)')
    .action(async (group: string, _o, cmd: Command) => {
      const job = await withClient(cmd, async (c) => {
        const { job } = await c.call('repl.verify', { group })
        return waitWithProgress(c, job, !globals(cmd).json && process.stdout.isTTY === true)
      })
      if (job.error) throw Object.assign(new Error(job.error.message), { code: job.error.code })
      const r = job.result as VerifyReport
      print(globals(cmd).json ? JSON.stringify(r, null, 2) : [`verified ${r.group}: ${formatSize(r.comparedBytes)} compared, ${r.differences.length ? `${formatSize(r.differentBytes)} differ` : 'no difference'}`,
        ...r.differences.map((d) => `  ${d.volume} ${d.offset}+${d.length}`)].join('\n'))
    })

  repl.command('set <group>').description('change a running group: its mode, rate limit or sync-fallback timeout (kept over restarts)')
    .option('--mode <mode>', 'async, sync or sync-fallback (flushes waiting for the secondary return once the new mode would not wait)')
    .option('--rate <size>', 'bytes per second shipping may use (K, M, G); 0: unlimited')
    .option('--sync-timeout <seconds>', 'sync-fallback: how long a flush waits for the secondary')
    .action((group: string, o, cmd: Command) => call(cmd, 'repl.set', {
      group, mode: o.mode, rate: o.rate === undefined ? undefined : o.rate === '0' ? 0 : parseSize(o.rate),
      syncTimeoutMs: o.syncTimeout === undefined ? undefined : Math.round(Number(o.syncTimeout) * 1000),
    }, (r) => `group ${r.group}: ${r.mode}${r.rate ? `, at most ${formatSize(r.rate)}/s` : ', no rate limit'}${r.syncTimeoutMs ? `, sync timeout ${r.syncTimeoutMs / 1000} s` : ''} (${r.state})`))

  repl.command('schedule <group>').description('consistent points (every disk frozen, snapshotted as repl-GROUP-TIME, thawed) on a schedule; they replicate, so the secondary can start a disk at any kept point. Without options: the schedule and the points')
    .option('--every <duration>', 'how often (e.g. 15m, 1h; at least 1s)')
    .option('--keep <n>', 'how many points to keep (the oldest beyond are deleted; default 96)')
    .option('--off', 'stop taking points (the kept ones stay)')
    .action((group: string, o, cmd: Command) => call(cmd, 'repl.schedule', {
      group, off: o.off ? true : undefined, everyMs: o.every === undefined ? undefined : parseDuration(o.every), keep: o.keep === undefined ? undefined : Number(o.keep),
    }, (r) => [
      r.schedule ? `group ${r.group}: a point every ${r.schedule.everyMs / 1000} s, the newest ${r.schedule.keep} kept` : `group ${r.group}: no schedule`,
      r.points.length ? table(['POINT', 'TAKEN', 'DISKS', 'ON SECONDARY'], r.points.map((p: any) => [p.name, formatDate(p.at), String(p.disks), p.onSecondary === null ? '?' : p.onSecondary ? 'yes' : 'not yet'])) : 'no points',
    ].join('\n')))

  repl.command('takeover <group>').description('on the secondary: promote it; it serves the group\'s fs and disks from its replicas (a resync in progress is rolled back to its snapshot first)')
    .option('--force', 'even while the primary is connected (both sites then write: split brain)')
    .action(async (group: string, o, cmd: Command) => {
      const r = await withClient(cmd, (c) => c.call('repl.takeover', { group, force: o.force ? true : undefined }))
      const mount = await waitServing(cmd)
      print(globals(cmd).json ? JSON.stringify({ ...r, mount }, null, 2)
        : `group ${r.group} taken over at seq ${r.point} (generation ${r.generation})${r.rolledBack ? `, rolled back to the resync snapshot (${formatSize(r.rolledBack.restoredBytes)} restored)` : ''}; serving at ${mount}`)
    })
  repl.command('failback <group>').description('on the original primary: --dry-run reports what this site would discard (its writes the other site never got)')
    .option('--dry-run', 'report, changing nothing')
    .option('--force', 'step the other site down even while its disks are open')
    .action(async (group: string, o, cmd: Command) => {
      const r = await withClient(cmd, (c) => c.call('repl.failback', { group, dryRun: o.dryRun ? true : undefined, force: o.force ? true : undefined }))
      if (o.dryRun) {
        print(globals(cmd).json ? JSON.stringify(r, null, 2) : [
          `failback of ${r.group} would discard ${formatSize(r.discardBytes)} written here after seq ${r.takenOver.point} and never replicated${r.complete ? '' : ' (at least: part of it left the log already)'}`,
          ...r.disks.map((d: any) => `  disk ${d.path}: ${formatSize(d.discardBytes)} in ${d.ranges.map((x: any) => `${x.offset}+${x.length}`).join(', ')}`),
          ...r.ranges.map((x: any) => `  volume ${x.volume} ${x.offset}+${x.length}`),
        ].join('\n'))
        return
      }
      // the other site stepped down; this daemon restarts its stack, which copies back before it serves
      const deadline = Date.now() + 600_000
      for (;;) {
        const st = await withClient(cmd, (c) => c.call('repl.status', { group })).then((x) => x[0], () => null)
        if (st && !st.takenOver && st.lastFailback) {
          const mount = await waitServing(cmd)
          print(globals(cmd).json ? JSON.stringify({ group, ...st.lastFailback, copiedBytes: st.lastFailback.copiedBytes, mount }, null, 2)
            : `group ${group} failed back: ${formatSize(st.lastFailback.copiedBytes)} copied from the other site (${st.lastFailback.ranges} ranges); serving at ${mount}`)
          return
        }
        if (st?.takenOver && /^failback:/.test(st.lastError ?? '')) throw new Error(`${st.lastError} (the group is still taken over: vsm repl status ${group})`)
        if (Date.now() > deadline) throw new Error(`the failback of ${group} did not finish: see vsm repl status ${group} and the log`)
        await sleep(300)
      }
    })

  program.command('replica').description('the secondary side of replication')
    .command('serve').description('the remote agent: relays the replication wire on stdin/stdout to the secondary daemon (started by the primary over SSH)')
    .action((_o, cmd: Command) => new Promise<void>((res, rej) => {
      const sock = connect(replicaSocket(homeDir(cmd.optsWithGlobals().home)))
      sock.once('error', (e) => rej(new Error(`no secondary daemon answers in that home (start it with vsm up --secondary): ${e.message}`)))
      sock.once('connect', () => {
        process.stdin.pipe(sock)
        sock.pipe(process.stdout)
        process.stdin.once('end', () => sock.end())
        sock.once('close', () => res())
      })
    }))
}
