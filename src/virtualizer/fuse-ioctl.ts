// In-band commands on a disk file: ioctl(2) on an open file in the FUSE view carries
// one of the virtualizer's commands (type byte 'V') in a struct vsm_file_cmd
// (native/include/vsm_ioctl.h), and the answer comes back in the same struct. The
// command is routed as the control socket would route it, for the disk the file is.
import { constants } from 'os'
import { VsmError } from '../block/blockdev'
import { COMMANDS, FILE_CMD_JSON_OFFSET, FILE_CMD_SIZE, fileIoc } from '../control/codes'
import type { Invoke } from './fuse-ops'

/** Commands that only look: a handle open read-only may send these; the rest need one open for writing. */
const READ_ONLY = new Set(['disk.show', 'disk.map', 'disk.check', 'snapshot.list'])
const byIoctl = new Map(COMMANDS.filter((c) => c.type === 'V' && !c.standard).map((c) => [fileIoc(c), c]))

export interface IoctlHandle { path: string; writable: boolean }

/**
 * Runs the command an ioctl code names; the reply struct holds status 0 and the result,
 * or -errno and the error. Result ENOTTY (ioctl fails) for a code that names none.
 */
export async function fileCommand(invoke: Invoke, h: IoctlHandle, cmd: number, input: Buffer): Promise<{ result: number; out?: Buffer }> {
  const c = byIoctl.get(cmd >>> 0)
  if (!c || input.length < FILE_CMD_SIZE) return { result: -constants.errno.ENOTTY }
  const out = Buffer.alloc(FILE_CMD_SIZE)
  const answer = (status: number, body: unknown) => {
    const json = Buffer.from(JSON.stringify(body))
    if (json.length > FILE_CMD_SIZE - FILE_CMD_JSON_OFFSET) return answer(-constants.errno.E2BIG, { error: 'E2BIG', message: `the reply (${json.length} bytes) does not fit in struct vsm_file_cmd` })
    out.writeInt32LE(status, 0)
    out.writeUInt32LE(json.length, 4)
    json.copy(out, FILE_CMD_JSON_OFFSET)
    return { result: 0, out }
  }
  try {
    const len = input.readUInt32LE(4)
    if (len > FILE_CMD_SIZE - FILE_CMD_JSON_OFFSET) throw new VsmError('EINVAL', `json length ${len} is larger than the struct`)
    const text = input.subarray(FILE_CMD_JSON_OFFSET, FILE_CMD_JSON_OFFSET + len).toString()
    const args = text.trim() ? JSON.parse(text) : {}
    if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new VsmError('EINVAL', 'the arguments must be a JSON object')
    if (!READ_ONLY.has(c.name) && !h.writable) throw new VsmError('EBADF', `${c.name} needs the disk open for writing`)
    return answer(0, await invoke(c.name, { path: h.path.slice(1), ...args }))
  } catch (err) {
    const e = err as { code?: string; message?: string }
    const code = err instanceof SyntaxError ? 'EINVAL' : typeof e.code === 'string' ? e.code : 'EIO'
    const errno = (constants.errno as Record<string, number>)[code] ?? constants.errno.EIO
    return answer(-errno, { error: code, message: e.message ?? String(err) })
  }
}
