// Turns a component's table of named commands into the one handler the server routes
// its type byte to: args arrive as an object (never undefined), unknown names get ENOSYS.
import { VsmError } from '../block/blockdev'
import type { Handler, RequestContext } from './server'

export type CommandFn = (args: Record<string, any>, ctx: RequestContext) => Promise<unknown> | unknown
export type CommandTable = Record<string, CommandFn>

export function dispatch(table: CommandTable): Handler {
  return async ({ name, args }, ctx) => {
    const fn = Object.prototype.hasOwnProperty.call(table, name) ? table[name] : undefined
    if (!fn) throw new VsmError('ENOSYS', `${name} is not implemented yet`)
    if (args !== undefined && (args === null || typeof args !== 'object' || Array.isArray(args))) throw new VsmError('EINVAL', `${name}: arguments must be a JSON object`)
    return fn(args ?? {}, ctx)
  }
}
