// Generates native/include/vsm_ioctl.h, the C view of the control protocol, from the
// command table and the codec's constants, so a C program speaks the same numbers as
// the daemon. `node dist/src/control/gen-header.js` writes it; `--check` exits 1 when
// the committed file differs from what the table generates (for CI).
import * as fs from 'fs'
import * as path from 'path'
import {
  COMMANDS, COMPONENTS, CommandDef, DISK_IO_HEADER_SIZE, FILE_CMD_JSON_OFFSET, FILE_CMD_SIZE, IOC_DIRBITS, IOC_DIRSHIFT, IOC_NRBITS, IOC_NRSHIFT,
  IOC_SIZEBITS, IOC_SIZESHIFT, IOC_TYPEBITS, IOC_TYPESHIFT, formatCode, macroName,
} from './codes'
import { DEFAULT_MAX_PAYLOAD, HEADER_SIZE, MAGIC, MAX_PATH, PROTOCOL_VERSION, UNSOLICITED_ID } from './codec'

export const HEADER_RELATIVE_PATH = path.join('native', 'include', 'vsm_ioctl.h')

const DIR_MACRO: Record<CommandDef['dir'], string> = {
  none: 'VSMIOC_NONE',
  write: 'VSMIOC_WRITE',
  read: 'VSMIOC_READ',
  readwrite: 'VSMIOC_READ | VSMIOC_WRITE',
}

const hex = (n: number, w = 2) => '0x' + n.toString(16).padStart(w, '0')

export function generateHeader(): string {
  const L: string[] = []
  const p = (s = '') => L.push(s)

  p('/* vsm_ioctl.h: command codes and frame layout of the vsm control socket (<home>/vsm.sock).')
  p(' *')
  p(' * GENERATED from src/control/codes.ts by src/control/gen-header.ts. Do not edit:')
  p(' * change the table and run `node dist/src/control/gen-header.js`.')
  p(' *')
  p(' * A frame is struct vsm_frame_header followed by `length` payload bytes. Every')
  p(' * integer on the wire is little-endian, whatever the host. Requests carry JSON for')
  p(' * extended commands and struct vsm_disk_io + path (+ data) for the standard disk')
  p(' * commands. Replies carry the request\'s code and id; status is 0 or a negative')
  p(' * errno, and an error reply\'s payload is JSON {"error": "ENOENT", "message": "..."}.')
  p(' * The server sends a greeting (VSM_IOC_HELLO) and events (VSM_IOC_EVENT) with')
  p(' * id VSM_UNSOLICITED_ID; clients number their requests from 1.')
  p(' */')
  p('#ifndef VSM_IOCTL_H')
  p('#define VSM_IOCTL_H')
  p()
  p('#include <stdint.h>')
  p()
  p('#if defined(__cplusplus) && __cplusplus >= 201103L')
  p('#define VSM_STATIC_ASSERT(expr, msg) static_assert(expr, msg)')
  p('#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L')
  p('#define VSM_STATIC_ASSERT(expr, msg) _Static_assert(expr, msg)')
  p('#else /* C99: a negative array size fails the build instead */')
  p('#define VSM_CAT_(a, b) a##b')
  p('#define VSM_CAT(a, b) VSM_CAT_(a, b)')
  p('#define VSM_STATIC_ASSERT(expr, msg) typedef char VSM_CAT(vsm_static_assert_, __LINE__)[(expr) ? 1 : -1]')
  p('#endif')
  p()
  p('/* Code layout: that of <asm-generic/ioctl.h> (_IOC). It is spelled out here instead')
  p(' * of using <linux/ioctl.h> because powerpc, mips and sparc split the bits')
  p(' * differently and the protocol must not depend on the host; on x86, arm and riscv')
  p(' * VSMIOC(d, t, n, s) == _IOC(d, t, n, s). */')
  p(`#define VSMIOC_NRBITS    ${IOC_NRBITS}`)
  p(`#define VSMIOC_TYPEBITS  ${IOC_TYPEBITS}`)
  p(`#define VSMIOC_SIZEBITS  ${IOC_SIZEBITS}`)
  p(`#define VSMIOC_DIRBITS   ${IOC_DIRBITS}`)
  p(`#define VSMIOC_NRSHIFT   ${IOC_NRSHIFT}`)
  p(`#define VSMIOC_TYPESHIFT ${IOC_TYPESHIFT}`)
  p(`#define VSMIOC_SIZESHIFT ${IOC_SIZESHIFT}`)
  p(`#define VSMIOC_DIRSHIFT  ${IOC_DIRSHIFT}`)
  p('#define VSMIOC_NONE  0U')
  p('#define VSMIOC_WRITE 1U')
  p('#define VSMIOC_READ  2U')
  p('#define VSMIOC(dir, type, nr, size) \\')
  p('  ((uint32_t)(((uint32_t)(dir) << VSMIOC_DIRSHIFT) | ((uint32_t)(size) << VSMIOC_SIZESHIFT) | \\')
  p('              ((uint32_t)(type) << VSMIOC_TYPESHIFT) | ((uint32_t)(nr) << VSMIOC_NRSHIFT)))')
  p('#define VSMIOC_DIR(code)  (((uint32_t)(code) >> VSMIOC_DIRSHIFT) & ((1U << VSMIOC_DIRBITS) - 1U))')
  p('#define VSMIOC_TYPE(code) (((uint32_t)(code) >> VSMIOC_TYPESHIFT) & ((1U << VSMIOC_TYPEBITS) - 1U))')
  p('#define VSMIOC_NR(code)   (((uint32_t)(code) >> VSMIOC_NRSHIFT) & ((1U << VSMIOC_NRBITS) - 1U))')
  p('#define VSMIOC_SIZE(code) (((uint32_t)(code) >> VSMIOC_SIZESHIFT) & ((1U << VSMIOC_SIZEBITS) - 1U))')
  p()
  p('/* Type byte: the component that owns a command. */')
  for (const [t, name] of Object.entries(COMPONENTS)) {
    p(`#define VSM_TYPE_${name.toUpperCase().padEnd(11)} '${t}'`)
  }
  p()
  p(`#define VSM_PROTOCOL_VERSION    ${PROTOCOL_VERSION}`)
  p(`#define VSM_FRAME_MAGIC         ${hex(MAGIC, 8)}U /* the bytes "VSM1" on the wire */`)
  p(`#define VSM_FRAME_HEADER_SIZE   ${HEADER_SIZE}`)
  p(`#define VSM_MAX_PAYLOAD_DEFAULT ${DEFAULT_MAX_PAYLOAD}U /* a larger length field closes the connection */`)
  p(`#define VSM_UNSOLICITED_ID      ${UNSOLICITED_ID}U`)
  p(`#define VSM_MAX_PATH            ${MAX_PATH}`)
  p()
  p('struct vsm_frame_header {')
  p('  uint32_t magic;  /* VSM_FRAME_MAGIC */')
  p('  uint32_t length; /* payload bytes after this header */')
  p('  uint32_t code;   /* VSM_IOC_* */')
  p('  uint32_t id;     /* request id, echoed in the reply */')
  p('  int32_t status;  /* replies: 0 or -errno */')
  p('};')
  p()
  p('/* Argument of the standard disk commands; followed by path_len bytes of path')
  p(' * (UTF-8, relative to the mount, no NUL) and, for VSM_IOC_DISK_WRITE, length data')
  p(' * bytes. The disk.read reply is the bytes; the disk.size reply is a u64. */')
  p('struct vsm_disk_io {')
  p('  uint64_t offset;')
  p('  uint32_t length;')
  p('  uint32_t path_len;')
  p('};')
  p()
  p(`VSM_STATIC_ASSERT(sizeof(struct vsm_frame_header) == VSM_FRAME_HEADER_SIZE, "struct vsm_frame_header");`)
  p(`VSM_STATIC_ASSERT(sizeof(struct vsm_disk_io) == ${DISK_IO_HEADER_SIZE}, "struct vsm_disk_io");`)
  p()
  p('/* In-band commands on an open disk file in the FUSE view (no socket needed):')
  p(' *   struct vsm_file_cmd c = { 0 }; c.len = sprintf(c.json, "{\\"name\\":\\"s1\\"}");')
  p(' *   ioctl(fd, VSM_FILE_IOC(VSM_IOC_SNAPSHOT_CREATE), &c);')
  p(' * json holds the command\'s JSON arguments (len bytes; "path" defaults to the disk the')
  p(' * file is). The reply overwrites it: status 0 and the result as JSON, or -errno and')
  p(' * {"error": ..., "message": ...}. ioctl(2) itself fails with ENOTTY for a code that')
  p(' * names no command. */')
  p(`#define VSM_FILE_CMD_JSON_MAX ${FILE_CMD_SIZE - FILE_CMD_JSON_OFFSET}`)
  p('struct vsm_file_cmd {')
  p('  int32_t status;  /* reply: 0 or -errno */')
  p('  uint32_t len;    /* bytes of JSON in json, both ways */')
  p('  char json[VSM_FILE_CMD_JSON_MAX];')
  p('};')
  p(`VSM_STATIC_ASSERT(sizeof(struct vsm_file_cmd) == ${FILE_CMD_SIZE}, "struct vsm_file_cmd");`)
  p('/* The ioctl(2) code for a command code: its type and nr, read|write, sizeof(struct vsm_file_cmd). */')
  p('#define VSM_FILE_IOC(code) \\')
  p('  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, VSMIOC_TYPE(code), VSMIOC_NR(code), sizeof(struct vsm_file_cmd))')
  p()
  p('/* Commands. */')
  const width = Math.max(...COMMANDS.map((c) => macroName(c).length))
  for (const c of COMMANDS) {
    p(`/* ${c.name}${c.standard ? ' [standard]' : ''}: ${c.description} */`)
    p(`#define ${macroName(c).padEnd(width)} VSMIOC(${DIR_MACRO[c.dir]}, '${c.type}', ${hex(c.nr)}, ${c.size}) /* ${formatCode(c.code)} */`)
  }
  p()
  p('/* The numbers themselves, so a mistake in the macros above cannot go unnoticed. */')
  for (const c of COMMANDS) {
    p(`VSM_STATIC_ASSERT(${macroName(c)} == ${formatCode(c.code)}U, "${c.name}");`)
  }
  p()
  p('/* Every command, for tables: X(MACRO, name, type, nr, standard). */')
  p('#define VSM_COMMANDS(X) \\')
  COMMANDS.forEach((c, i) => {
    const tail = i === COMMANDS.length - 1 ? '' : ' \\'
    p(`  X(${macroName(c)}, "${c.name}", '${c.type}', ${hex(c.nr)}, ${c.standard ? 1 : 0})${tail}`)
  })
  p()
  p('#endif /* VSM_IOCTL_H */')
  return L.join('\n') + '\n'
}

/** The repository root: the nearest directory above this file with vsm's package.json. */
export function repoRoot(from = __dirname): string {
  let dir = from
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) {
      try { if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'vsm') return dir } catch { /* keep looking */ }
    }
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`no vsm package.json above ${from}`)
    dir = up
  }
}

function main(argv: string[]): number {
  const check = argv.includes('--check')
  const outIdx = argv.indexOf('--out')
  const out = outIdx >= 0 ? argv[outIdx + 1] : path.join(repoRoot(), HEADER_RELATIVE_PATH)
  const text = generateHeader()
  if (check) {
    const current = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null
    if (current === text) { console.log(`${out} is up to date`); return 0 }
    console.error(`${out} is ${current === null ? 'missing' : 'out of date'}: run node dist/src/control/gen-header.js`)
    return 1
  }
  fs.mkdirSync(path.dirname(out), { recursive: true })
  fs.writeFileSync(out, text)
  console.log(`wrote ${out} (${COMMANDS.length} commands)`)
  return 0
}

if (require.main === module) process.exitCode = main(process.argv.slice(2))
