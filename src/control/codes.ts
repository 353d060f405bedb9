// The one table of control-socket command codes. Everything else that knows a code
// (the codec, the router, the client, native/include/vsm_ioctl.h) derives from this
// table, so a number can never mean two things in two places.
//
// Numbers use the Linux _IOC layout of asm-generic/ioctl.h (dir 2 bits at 30, size 14
// bits at 16, type 8 bits at 8, nr 8 bits at 0). The layout is fixed by the protocol,
// not taken from the host architecture (powerpc/mips/sparc use a different split), so
// a code means the same on every machine that speaks to a vsm socket.
//
// Only numbers and names: each command's argument schema is in schemas.ts, so a client
// of the socket (every vsm command) does not load the schema library to send one.
import { VsmError } from '../block/blockdev'

/** The owner of a command: the type byte of its code. */
export type ComponentType = 'V' | 'F' | 'L' | 'R' | 'H' | 'S'

export const COMPONENTS: Record<ComponentType, string> = {
  V: 'virtualizer',
  F: 'fs',
  L: 'volume',
  R: 'replicator',
  H: 'hsm',
  S: 'system',
}

/** Direction, seen from the client as in Linux: 'write' sends data in, 'read' gets data back. */
export type Direction = 'none' | 'write' | 'read' | 'readwrite'

export const IOC_NONE = 0
export const IOC_WRITE = 1
export const IOC_READ = 2

export const IOC_NRBITS = 8
export const IOC_TYPEBITS = 8
export const IOC_SIZEBITS = 14
export const IOC_DIRBITS = 2
export const IOC_NRSHIFT = 0
export const IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS
export const IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS
export const IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS

const DIR_BITS: Record<Direction, number> = {
  none: IOC_NONE,
  write: IOC_WRITE,
  read: IOC_READ,
  readwrite: IOC_READ | IOC_WRITE,
}

/**
 * Size of the fixed binary argument of the standard disk commands (struct vsm_disk_io:
 * offset u64, length u32, path_len u32; the path and, for writes, the data follow).
 * It goes in the size field as Linux does with sizeof(arg). JSON commands have no
 * fixed argument, so their size field is 0.
 */
export const DISK_IO_HEADER_SIZE = 16

/**
 * In-band commands on an open disk file in the FUSE view go by ioctl(2) with the
 * command's type and nr, direction read|write and this size: struct vsm_file_cmd
 * (status i32, len u32, then JSON in and out), so the size field covers the argument as
 * FUSE's restricted ioctls require.
 */
export const FILE_CMD_SIZE = 4096

/** Most extents one disk.map reply carries (~130 bytes each as JSON: far below the frame limit). */
export const MAP_PAGE = 65536
export const FILE_CMD_JSON_OFFSET = 8

/** The ioctl(2) code that carries a command on a disk file (see FILE_CMD_SIZE). */
export function fileIoc(c: CommandDef): number { return ioc('readwrite', c.type, c.nr, FILE_CMD_SIZE) }

/** Linux _IOC(dir, type, nr, size). */
export function ioc(dir: Direction, type: string, nr: number, size: number): number {
  if (type.length !== 1 || type.charCodeAt(0) > 0xff) throw new RangeError(`type must be one byte: ${type}`)
  if (!Number.isInteger(nr) || nr < 0 || nr > 0xff) throw new RangeError(`nr out of range: ${nr}`)
  if (!Number.isInteger(size) || size < 0 || size >= 1 << IOC_SIZEBITS) throw new RangeError(`size out of range: ${size}`)
  // >>> 0 keeps read-direction codes (bit 31 set) positive, as the u32 on the wire.
  return (
    ((DIR_BITS[dir] << IOC_DIRSHIFT) |
      (size << IOC_SIZESHIFT) |
      (type.charCodeAt(0) << IOC_TYPESHIFT) |
      (nr << IOC_NRSHIFT)) >>>
    0
  )
}

export function iocDir(code: number): number { return (code >>> IOC_DIRSHIFT) & ((1 << IOC_DIRBITS) - 1) }
export function iocSize(code: number): number { return (code >>> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1) }
export function iocType(code: number): number { return (code >>> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1) }
export function iocNr(code: number): number { return (code >>> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1) }

export interface CommandDef {
  /** Dotted name used by the CLI, the JSON API and `vsm ctl` (e.g. 'disk.create'). */
  readonly name: string
  readonly type: ComponentType
  readonly nr: number
  readonly dir: Direction
  /** Fixed binary argument size for the size field; 0 for JSON commands. */
  readonly size: number
  /** A command a disk already understands: binary payload, served by the virtualizer's data path. */
  readonly standard: boolean
  readonly description: string
  /** The full 32-bit code. */
  readonly code: number
}

type Row = readonly [name: string, type: ComponentType, nr: number, dir: Direction, description: string]

// nr ranges are grouped per object inside a type (0x00 system, 0x10 jobs, 0x20
// events; 0x10 disks, 0x20 snapshots ...) so a component can grow a group without
// renumbering. Numbers, once published in the header, never change meaning.
const STANDARD: Row[] = [
  ['disk.read', 'V', 0x01, 'readwrite', 'read bytes from a virtual disk (binary: struct vsm_disk_io + path; reply: raw bytes)'],
  ['disk.write', 'V', 0x02, 'write', 'write bytes to a virtual disk (binary: struct vsm_disk_io + path + data)'],
  ['disk.flush', 'V', 0x03, 'write', 'make everything written to a virtual disk stable (binary: struct vsm_disk_io + path)'],
  ['disk.discard', 'V', 0x04, 'write', 'discard a byte range of a virtual disk (binary: struct vsm_disk_io + path)'],
  ['disk.size', 'V', 0x05, 'readwrite', 'size of a virtual disk in bytes (binary: struct vsm_disk_io + path; reply: u64 LE)'],
]

const EXTENDED = [
  // S: system
  ['hello', 'S', 0x00, 'read', 'greeting: version, capabilities and the code table (sent by the server on connect)'],
  ['status', 'S', 0x01, 'read', 'daemon status: home, mount, pool, components'],
  ['shutdown', 'S', 0x02, 'none', 'flush, unmount and stop the daemon'],
  ['job.list', 'S', 0x10, 'read', 'list jobs'],
  ['job.wait', 'S', 0x11, 'readwrite', 'wait for a job (or all jobs) to conclude'],
  ['job.cancel', 'S', 0x12, 'readwrite', 'cancel a job'],
  ['job.pause', 'S', 0x13, 'readwrite', 'pause a pausable job'],
  ['job.resume', 'S', 0x14, 'readwrite', 'resume a paused job'],
  ['events.subscribe', 'S', 0x20, 'readwrite', 'receive event frames (request id 0) on this connection'],
  ['event', 'S', 0x21, 'read', 'an asynchronous event, sent by the server with request id 0'],

  // V: virtualizer, extended
  ['disk.create', 'V', 0x10, 'readwrite', 'create a virtual disk'],
  ['disk.list', 'V', 0x11, 'read', 'list virtual disks'],
  ['disk.show', 'V', 0x12, 'readwrite', 'show a virtual disk'],
  ['disk.resize', 'V', 0x13, 'readwrite', 'resize a virtual disk'],
  ['disk.delete', 'V', 0x14, 'write', 'delete a virtual disk'],
  ['disk.clone', 'V', 0x15, 'readwrite', 'clone a disk snapshot into a new disk'],
  ['disk.flatten', 'V', 0x16, 'readwrite', 'make a clone independent of its parent (a job)'],
  ['disk.freeze', 'V', 0x17, 'readwrite', 'hold new writes to a disk and flush it (application-consistent snapshots)'],
  ['disk.thaw', 'V', 0x18, 'readwrite', 'release the writes held by disk.freeze'],
  ['disk.check', 'V', 0x19, 'readwrite', 'check a disk for corruption and leaked space'],
  ['disk.map', 'V', 0x1a, 'readwrite', 'allocated extents of a disk and which layer holds each, a page at a time (next: where the following page starts)'],
  ['disk.compare', 'V', 0x1b, 'readwrite', 'compare the contents of two disks'],
  ['snapshot.create', 'V', 0x20, 'readwrite', 'create a snapshot of a disk'],
  ['snapshot.list', 'V', 0x21, 'readwrite', 'list the snapshots of a disk'],
  ['snapshot.revert', 'V', 0x22, 'readwrite', 'revert a disk to a snapshot'],
  ['snapshot.delete', 'V', 0x23, 'readwrite', 'delete a snapshot'],

  // F: fs
  ['fs.stat', 'F', 0x01, 'readwrite', 'file system or file statistics'],
  ['fs.check', 'F', 0x02, 'readwrite', 'check file system consistency'],
  ['fs.volume.add', 'F', 0x10, 'readwrite', 'add a pool volume to the running file system'],
  ['fs.volume.remove', 'F', 0x11, 'readwrite', 'move every file off a volume (a job), then drop it from the file system'],
  ['fs.policy.set', 'F', 0x20, 'readwrite', 'place new files under a directory (or only those matching a name pattern) on a volume'],
  ['fs.policy.list', 'F', 0x21, 'read', 'list the placement policies'],
  ['fs.move', 'F', 0x30, 'readwrite', "move a file's extents to another volume while it is in use (a job)"],

  // L: volume manager
  ['device.add', 'L', 0x01, 'readwrite', 'add a backing device to the pool'],
  ['device.list', 'L', 0x02, 'read', 'list devices'],
  ['device.remove', 'L', 0x03, 'readwrite', 'remove a device from the pool'],
  ['device.offline', 'L', 0x04, 'readwrite', 'take a device out of service (its volumes run degraded)'],
  ['device.online', 'L', 0x05, 'readwrite', 'bring a device back and resync what it missed (a job)'],
  ['volume.create', 'L', 0x10, 'readwrite', 'create a volume'],
  ['volume.list', 'L', 0x11, 'read', 'list volumes'],
  ['volume.show', 'L', 0x12, 'readwrite', 'show a volume'],
  ['volume.grow', 'L', 0x13, 'readwrite', 'grow a volume'],
  ['volume.move', 'L', 0x14, 'readwrite', 'move a volume (or part of it) to other devices'],
  ['volume.relayout', 'L', 0x15, 'readwrite', 'change the layout of a volume online'],
  ['volume.replace', 'L', 0x16, 'readwrite', 'replace a device of a volume'],
  ['volume.scrub', 'L', 0x17, 'readwrite', 'verify and repair redundancy of a volume'],
  ['pool.history', 'L', 0x20, 'read', 'the recent versions of the pool configuration: seq, time and what each changed'],

  // R: replicator
  ['repl.create', 'R', 0x01, 'readwrite', 'create a replicated volume group'],
  ['repl.status', 'R', 0x02, 'readwrite', 'replication link state, lag and log fill'],
  ['repl.pause', 'R', 0x03, 'readwrite', 'pause replication of a group'],
  ['repl.resume', 'R', 0x04, 'readwrite', 'resume replication of a group'],
  ['repl.verify', 'R', 0x05, 'readwrite', 'compare primary and secondary'],
  ['repl.takeover', 'R', 0x06, 'readwrite', 'promote the secondary: it serves the group from its replicas'],
  ['repl.failback', 'R', 0x07, 'readwrite', 'delta resync back to the old primary'],
  ['repl.set', 'R', 0x09, 'readwrite', 'change the mode, rate limit (0: none) or sync-fallback timeout of a group'],
  ['repl.schedule', 'R', 0x08, 'readwrite', 'consistent points of every disk on a schedule, kept on both sites; lists the points'],

  // H: hsm
  ['hsm.tier.add', 'H', 0x01, 'readwrite', 'add a storage tier: a volume the file system spans, or an archive (a directory or sftp://)'],
  ['hsm.policy.set', 'H', 0x02, 'readwrite', 'set a migration policy on a path (inherited down the tree)'],
  ['hsm.migrate', 'H', 0x03, 'readwrite', 'migrate a file to a tier (a job)'],
  ['hsm.recall', 'H', 0x04, 'readwrite', 'recall a migrated file (or bytes A-B of it) to the volume it came from (a job)'],
  ['hsm.pin', 'H', 0x05, 'readwrite', 'pin a file: policy runs never migrate it'],
  ['hsm.unpin', 'H', 0x06, 'readwrite', 'unpin a file'],
  ['hsm.status', 'H', 0x07, 'readwrite', 'per file the bytes on each tier, totals per tier'],
  ['hsm.tier.list', 'H', 0x08, 'read', 'list the tiers with capacity and use'],
  ['hsm.run', 'H', 0x09, 'readwrite', 'run the migration policies now (a job)'],
  ['hsm.check', 'H', 0x0a, 'readwrite', 'find (and remove) archive objects nothing points into; report missing ones'],
] as const satisfies readonly Row[]

type Extended = (typeof EXTENDED)[number]
/** The name of a command whose arguments are JSON. */
export type CommandName = Extended[0]

function define(row: Row, standard: boolean): CommandDef {
  const [name, type, nr, dir, description] = row
  const size = standard ? DISK_IO_HEADER_SIZE : 0
  return Object.freeze({ name, type, nr, dir, size, standard, description, code: ioc(dir, type, nr, size) })
}

export const COMMANDS: readonly CommandDef[] = Object.freeze([...STANDARD.map((r) => define(r, true)), ...EXTENDED.map((r) => define(r, false))])

const byNameMap = new Map<string, CommandDef>()
const byCodeMap = new Map<number, CommandDef>()
const byTypeNr = new Map<string, CommandDef>()
for (const c of COMMANDS) {
  // Fail at load time: a duplicate would silently route a command to the wrong owner.
  if (byNameMap.has(c.name)) throw new Error(`duplicate command name ${c.name}`)
  const tn = `${c.type}:${c.nr}`
  if (byTypeNr.has(tn)) throw new Error(`duplicate command number ${tn} (${c.name}, ${byTypeNr.get(tn)!.name})`)
  byNameMap.set(c.name, c)
  byCodeMap.set(c.code, c)
  byTypeNr.set(tn, c)
}

export function byName(name: string): CommandDef | undefined { return byNameMap.get(name) }
export function byCode(code: number): CommandDef | undefined { return byCodeMap.get(code >>> 0) }

/** The command for a name or number; VsmError EINVAL when there is none. */
export function lookup(nameOrCode: string | number): CommandDef {
  const c = typeof nameOrCode === 'number' ? byCode(nameOrCode) : byName(nameOrCode)
  if (!c) {
    const shown = typeof nameOrCode === 'number' ? formatCode(nameOrCode) : JSON.stringify(nameOrCode)
    throw new VsmError('EINVAL', `unknown command ${shown}`)
  }
  return c
}

/** True for the commands a disk already understands (binary payload, data path). */
export function isStandard(code: number | string): boolean {
  const c = typeof code === 'number' ? byCode(code) : byName(code)
  return c !== undefined && c.standard
}

/** What `vsm ctl CODE` accepts: a name, a decimal number or a 0x hex number. */
export function parseCode(text: string): number {
  const t = text.trim()
  if (/^0x[0-9a-f]{1,8}$/i.test(t)) return parseInt(t.slice(2), 16) >>> 0
  if (/^[0-9]{1,10}$/.test(t) && Number(t) <= 0xffffffff) return Number(t)
  return lookup(t).code
}

export function formatCode(code: number): string { return '0x' + (code >>> 0).toString(16).padStart(8, '0') }

/** C macro name for a command: disk.create → VSM_IOC_DISK_CREATE. */
export function macroName(c: CommandDef): string { return 'VSM_IOC_' + c.name.toUpperCase().replace(/[^A-Z0-9]/g, '_') }

export function componentOf(code: number): ComponentType | undefined {
  const t = String.fromCharCode(iocType(code))
  return t in COMPONENTS ? (t as ComponentType) : undefined
}
