// The argument schema of every command of the table in codes.ts whose arguments are
// JSON (a standard command's are the binary struct vsm_disk_io, which the codec checks),
// and the check that holds a command's arguments to it before any component sees them.
// Apart from the table so that a client, which only sends commands, never loads zod
// (~100 ms of every vsm command's start).
import { z } from 'zod'
import { VsmError } from '../block/blockdev'
import {
  ArgSchema, NONE, SERVER_ONLY, args, bytes, copies, disk, explain, flag, hostPath, jobId, layout, mode, mountPath, objectName, objectNames, owner, pattern,
  rate, shortText, snapshotName,
} from './args'
import { MAP_PAGE, type CommandDef, type CommandName } from './codes'

export const SCHEMAS = {
  // S: system
  'hello': NONE,
  'status': NONE,
  'shutdown': args({ force: flag.optional() }),
  'job.list': NONE,
  'job.wait': args({ id: jobId.optional(), all: flag.optional(), timeoutMs: z.int().nonnegative().optional() })
    .refine((a) => a.all || a.id !== undefined, { message: 'is required (or all: true)', path: ['id'] }),
  'job.cancel': args({ id: jobId }),
  'job.pause': args({ id: jobId }),
  'job.resume': args({ id: jobId }),
  'events.subscribe': args({ events: z.array(z.string().min(1).max(128)).optional() }),
  'event': SERVER_ONLY,

  // V: virtualizer, extended
  'disk.create': args({ path: disk, size: bytes, volume: objectName.optional(), owner: owner.optional(), mode: mode.optional() }),
  'disk.list': NONE,
  'disk.show': args({ path: disk }),
  'disk.resize': args({ path: disk, size: bytes, shrink: flag.optional(), force: flag.optional() }),
  'disk.delete': args({ path: disk, force: flag.optional(), recursive: flag.optional() }),
  'disk.clone': args({ source: mountPath, path: disk, owner: owner.optional() }),
  'disk.flatten': args({ path: disk }),
  'disk.freeze': args({ path: disk, timeoutMs: z.int().min(1).max(3_600_000).optional() }),
  'disk.thaw': args({ path: disk }),
  'disk.check': args({ path: mountPath }),
  'disk.map': args({ path: mountPath, from: z.int().nonnegative().optional(), limit: z.int().min(1).max(MAP_PAGE).optional() }),
  'disk.compare': args({ a: mountPath, b: mountPath }),
  'snapshot.create': args({ path: disk, name: snapshotName }),
  'snapshot.list': args({ path: disk }),
  'snapshot.revert': args({ path: disk, name: snapshotName, force: flag.optional() }),
  'snapshot.delete': args({ path: disk, name: snapshotName }),

  // F: fs
  'fs.stat': NONE,
  'fs.check': NONE,
  'fs.volume.add': args({ volume: objectName }),
  'fs.volume.remove': args({ volume: objectName, to: objectName.optional() }),
  'fs.policy.set': args({ dir: mountPath, volume: objectName, match: pattern.optional() }),
  'fs.policy.list': NONE,
  'fs.move': args({ path: mountPath, volume: objectName, rate: rate.optional() }),

  // L: volume manager
  'device.add': args({ name: objectName, path: hostPath, size: bytes.optional(), spare: flag.optional(), force: flag.optional() }),
  'device.list': NONE,
  'device.remove': args({ name: objectName }),
  'device.offline': args({ name: objectName }),
  'device.online': args({ name: objectName }),
  'volume.create': args({ name: objectName, layout, devices: objectNames, size: bytes, stripeUnit: bytes.optional(), copies: copies.optional() }),
  'volume.list': NONE,
  'volume.show': args({ name: objectName }),
  'volume.grow': args({ name: objectName, size: bytes, rate: rate.optional() }),
  'volume.move': args({ name: objectName, from: objectName, to: objectName, rate: rate.optional() }),
  'volume.relayout': args({
      name: objectName, abort: flag.optional(), layout: layout.optional(), devices: objectNames.optional(),
      stripeUnit: bytes.optional(), copies: copies.optional(), rate: rate.optional(),
    }),
  'volume.replace': args({ name: objectName, from: objectName, to: objectName, rate: rate.optional() }),
  'volume.scrub': args({ name: objectName, rate: rate.optional() }),
  'pool.history': NONE,

  // R: replicator
  'repl.create': args({
      group: objectName, volumes: objectNames.optional(), target: hostPath.refine((t) => t.startsWith('ssh://'), 'must be ssh://USER@HOST[:PORT]/REMOTE_HOME'),
      mode: z.enum(['async', 'sync', 'sync-fallback']).optional(), identity: hostPath.optional(), knownHosts: hostPath.optional(),
      remoteVsm: hostPath.optional(), rate: rate.optional(), logSize: bytes.optional(), syncTimeoutMs: z.int().positive().optional(),
    }),
  'repl.status': args({ group: objectName.optional() }),
  'repl.pause': args({ group: objectName }),
  'repl.resume': args({ group: objectName }),
  'repl.verify': args({ group: objectName }),
  'repl.takeover': args({ group: objectName, force: flag.optional() }),
  'repl.failback': args({ group: objectName, dryRun: flag.optional(), force: flag.optional() }),
  'repl.set': args({ group: objectName, mode: z.enum(['async', 'sync', 'sync-fallback']).optional(), rate: z.int().nonnegative().optional(), syncTimeoutMs: z.int().positive().optional() }),
  'repl.schedule': args({ group: objectName, everyMs: z.int().nonnegative().optional(), keep: z.int().optional(), off: flag.optional() }),

  // H: hsm
  'hsm.tier.add': args({ name: objectName, volume: objectName.optional(), archive: hostPath.optional(), identity: hostPath.optional(), knownHosts: hostPath.optional(), timeout: shortText.optional() }),
  'hsm.policy.set': args({ path: mountPath, coldAfter: z.union([z.string().min(1).max(32), z.number().nonnegative()]).optional(), minSize: z.int().nonnegative().optional(), tier: objectName,
      high: shortText.optional(), low: shortText.optional(), premigrate: flag.optional(), regions: z.union([flag, z.int().positive()]).optional(), snapshotsFirst: flag.optional() }),
  'hsm.migrate': args({ path: mountPath, tier: objectName.optional(), rate: rate.optional(), premigrate: flag.optional() }),
  'hsm.recall': args({ path: mountPath, range: shortText.optional(), rate: rate.optional() }),
  'hsm.pin': args({ path: mountPath }),
  'hsm.unpin': args({ path: mountPath }),
  'hsm.status': args({ path: mountPath.optional() }),
  'hsm.tier.list': NONE,
  'hsm.run': NONE,
  'hsm.check': args({ dryRun: flag.optional() }),
} as const satisfies Record<CommandName, ArgSchema>

/** A command's arguments as its schema lets them through. */
export type CommandArgs<N extends CommandName> = z.output<(typeof SCHEMAS)[N]>

/**
 * The arguments of a command checked against its schema (an empty payload is no
 * arguments). Otherwise EINVAL, one line naming each field that is wrong; unknown
 * fields first, since a misspelt field is also why a required one seems missing.
 */
export function checkArgs(def: CommandDef, raw: unknown): Record<string, unknown> {
  if (def.standard) throw new VsmError('EINVAL', `${def.name} takes a binary argument, not JSON`)
  const r = SCHEMAS[def.name as CommandName].safeParse(raw ?? {}, { reportInput: true })
  if (r.success) return r.data
  const issues = [...r.error.issues].sort((x, y) => Number(y.code === 'unrecognized_keys') - Number(x.code === 'unrecognized_keys'))
  throw new VsmError('EINVAL', `${def.name}: ${issues.map(explain).join('; ')}`)
}
