// Turns a component's table of named commands into the one handler the server routes
// its type byte to. The server has already held the arguments to the command's schema
// (schemas.ts), so each function gets them typed and checked; unknown names get ENOSYS.
import { VsmError } from '../block/blockdev'
import type { CommandName } from './codes'
import type { CommandArgs } from './schemas'
import type { Handler, RequestContext } from './server'

export type CommandFn<N extends CommandName> = (args: CommandArgs<N>, ctx: RequestContext) => Promise<unknown> | unknown
export type CommandTable = { readonly [N in CommandName]?: CommandFn<N> }

export function dispatch(table: CommandTable): Handler {
  return async ({ name, args }, ctx) => {
    const fn = Object.prototype.hasOwnProperty.call(table, name) ? table[name as CommandName] : undefined
    if (!fn) throw new VsmError('ENOSYS', `${name} is not implemented yet`)
    return (fn as CommandFn<CommandName>)(args, ctx)
  }
}
