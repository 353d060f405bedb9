// What the CLI and the daemon agree on about starting one: the version, the log levels
// and the FUSE bindings `vsm up` takes. A module of constants only, so that the CLI, a
// client of the control socket, parses its options without loading the daemon (the stack's
// modules were ~70% of every command's 0.43 s start).

export const VERSION = '0.1.0'

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const
export type LogLevel = typeof LOG_LEVELS[number]

/** native: our libfuse3 low-level addon (the default); fuse-native: the libfuse2 fallback. */
export const FUSE_BINDINGS = ['native', 'fuse-native'] as const
export type FuseBindingName = typeof FUSE_BINDINGS[number]
