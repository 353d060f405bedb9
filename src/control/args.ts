// The vocabulary of command arguments (names, sizes, flags) that the commands' schemas
// (schemas.ts) are built from, and the one line that explains what is wrong with an
// argument. Arguments of the wrong type, unknown fields and values out of range are
// refused with EINVAL naming the field: a string "false" must never be taken for a flag
// that is set.
import { z } from 'zod'
import { BUILT_LAYOUTS, LayoutKind, NAME_RE } from '../volume/config'

/** Control characters (C0, DEL, C1): never part of a name; a newline in a name forges lines in logs and listings. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/

const noControl = (s: string) => !CONTROL.test(s)
const MAX_PATH = 1024

/** The shape of arguments: an object with exactly these fields. */
export const args = <T extends z.ZodRawShape>(shape: T) => z.strictObject(shape)

/** A command that takes no arguments. */
export const NONE = args({})
/** A frame only the server sends (events): nothing a client sends is right. */
export const SERVER_ONLY: ArgSchema = z.custom<Record<string, unknown>>(() => false, 'are refused: this frame is sent by the server, never to it')

export const flag = z.boolean()
export const bytes = z.int().positive()
/** A copy rate in bytes per second. */
export const rate = bytes

export const layout = z.enum(BUILT_LAYOUTS as [LayoutKind, ...LayoutKind[]])
/** Copies of each block of a mirror or raid10. */
export const copies = z.int().min(2).max(8)
export const percent = z.number().min(0).max(100)

/** Names of devices, volumes, replication groups and tiers: the volume manager's rule. */
export const objectName = z.string().regex(NAME_RE, 'must be 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit')
export const objectNames = z.array(objectName).min(1)

/** Text of 1 to `max` characters without control characters. */
const text = (max: number) => z.string().min(1).max(max).refine(noControl, 'must not contain control characters or newlines')

/** A disk (or directory) in the mount, relative to it; diskPath() then refuses '..', absolute paths and the like. */
export const disk = text(MAX_PATH).refine((s) => !s.includes('@'), "must not contain '@' (reserved for DISK@SNAP)")

/** Any path in the mount: a file, a disk, DISK@SNAP or .snapshots/DISK/SNAP (what it must name is its owner's check). */
export const mountPath = text(MAX_PATH)

export const snapshotName = text(255)
  .refine((s) => !/[/@]/.test(s), "must not contain '/' or '@'")
  .refine((s) => s !== '.' && s !== '..', "must not be '.' or '..'")

/** A path on the host (a backing file, a key file): the host's rules, minus control characters. */
export const hostPath = text(4096)

/** A short value given as text and parsed by its owner (a duration such as 30s, a byte range A-B). */
export const shortText = text(64)

/** A file-name pattern (glob). */
export const pattern = text(255)

export const jobId = z.int().positive()

/** USER or USER:GROUP, names or ids (resolved by the virtualizer through getent). */
export const owner = text(256)
/** Permission bits: a number, or octal text as chmod(1) takes it. */
export const mode = z.union([z.int(), z.string()], { error: 'must be a number or octal text' })
  .refine((v) => (typeof v === 'number' ? v >= 0 && v <= 0o7777 : /^0?[0-7]{1,4}$/.test(v)), 'must be octal permission bits, 0 to 7777')

export type ArgSchema = z.ZodType<Record<string, unknown>>

const NOUN: Record<string, string> = {
  boolean: 'true or false', int: 'a whole number', number: 'a number', string: 'a string',
  array: 'a list', object: 'a JSON object',
}

const show = (v: unknown) => (v === undefined ? 'missing' : JSON.stringify(v) ?? String(v))

function fieldName(path: PropertyKey[]): string {
  return path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${String(p)}` : String(p)), '')
}

/** One line for the first thing wrong, naming the field. */
export function explain(issue: z.core.$ZodIssue): string {
  const field = fieldName(issue.path) || 'arguments'
  const got = (issue as { input?: unknown }).input
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${issue.path.length ? `${field}.` : ''}${k}'`).join(', ')}`
    case 'invalid_type':
      if (got === undefined) return `${field} is required`
      return `${field} must be ${NOUN[issue.expected] ?? issue.expected}, not ${show(got)}`
    case 'too_small':
    case 'too_big': {
      const bound = Number(issue.code === 'too_small' ? issue.minimum : issue.maximum)
      const edge = issue.code === 'too_small' ? (issue.inclusive ? 'at least' : 'more than') : (issue.inclusive ? 'at most' : 'less than')
      const unit = issue.origin === 'string' ? ' characters long' : issue.origin === 'array' ? ' entries' : ''
      return `${field} must be ${edge} ${bound}${unit}, not ${show(got)}`
    }
    case 'invalid_value':
      if (got === undefined) return `${field} is required`
      return `${field} must be one of ${issue.values.map((v) => String(v)).join(', ')}, not ${show(got)}`
    default:
      return `${field} ${issue.message}${got === undefined ? '' : ` (got ${show(got)})`}`
  }
}
