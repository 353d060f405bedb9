// The published C header: the committed file is exactly what the command table
// generates, it compiles cleanly as C and C++, its numbers equal the TypeScript
// codes, and on this host VSMIOC matches the kernel's own _IOC.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import { COMMANDS, macroName } from '../src/control/codes'
import { HEADER_SIZE, MAGIC, errnoOf } from '../src/control/codec'
import { ControlServer } from '../src/control/server'
import { generateHeader, repoRoot, HEADER_RELATIVE_PATH } from '../src/control/gen-header'

const root = repoRoot(__dirname)
const headerPath = path.join(root, HEADER_RELATIVE_PATH)
const includeDir = path.dirname(headerPath)

const t = suite('vsm_ioctl.h')

t('the committed header equals the generated text', () => {
  assert.ok(fs.existsSync(headerPath), `${headerPath} is missing: run node dist/src/control/gen-header.js`)
  const committed = fs.readFileSync(headerPath, 'utf8')
  // fixed_diff shows what changed; the message says how to fix it
  assert.fixture(committed, generateHeader(), 'header is stale: run node dist/src/control/gen-header.js')
})

t('gen-header --check agrees', () => {
  const script = path.join(root, 'dist', 'src', 'control', 'gen-header.js')
  const r = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' })
  assert.is(r.status, 0, r.stderr)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-hdr-'))
  try {
    const out = path.join(tmp, 'h.h')
    fs.writeFileSync(out, '/* old */\n')
    assert.is(spawnSync(process.execPath, [script, '--check', '--out', out]).status, 1)
    assert.is(spawnSync(process.execPath, [script, '--out', out]).status, 0)
    assert.is(fs.readFileSync(out, 'utf8'), generateHeader())
  } finally { fs.rmSync(tmp, { recursive: true, force: true }) }
})

function compileAndRun(source: string, compiler: string, args: string[]) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-cc-'))
  try {
    const src = path.join(tmp, compiler === 'c++' ? 'p.cc' : 'p.c')
    const bin = path.join(tmp, 'p')
    fs.writeFileSync(src, source)
    const cc = spawnSync(compiler, [...args, '-I', includeDir, src, '-o', bin], { encoding: 'utf8' })
    assert.is(cc.status, 0, `${compiler} failed:\n${cc.stderr.slice(0, 3000)}`)
    assert.is(cc.stderr, '', `warnings:\n${cc.stderr.slice(0, 3000)}`)
    const run = spawnSync(bin, { encoding: 'utf8' })
    assert.is(run.status, 0, run.stderr)
    return run.stdout
  } finally { fs.rmSync(tmp, { recursive: true, force: true }) }
}

const haveCc = spawnSync('cc', ['--version']).status === 0

t('a C program including it sees the same numbers, structs and names', () => {
  if (!haveCc) { console.log('  (cc not installed: skipped)'); return }
  const src = `#include <stdio.h>
#include <stddef.h>
#include <linux/ioctl.h>
#include "vsm_ioctl.h"
#define PRINT(m, name, type, nr, std) \\
  printf("%s %s %u %c %u %d %d\\n", #m, name, (unsigned)(m), (char)VSMIOC_TYPE(m), (unsigned)VSMIOC_NR(m), std, (unsigned)(m) == (unsigned)_IOC(VSMIOC_DIR(m), VSMIOC_TYPE(m), VSMIOC_NR(m), VSMIOC_SIZE(m)));
int main(void) {
  printf("magic %u\\n", (unsigned)VSM_FRAME_MAGIC);
  printf("header %u %u\\n", (unsigned)sizeof(struct vsm_frame_header), (unsigned)VSM_FRAME_HEADER_SIZE);
  printf("offsets %u %u %u %u %u\\n", (unsigned)offsetof(struct vsm_frame_header, magic), (unsigned)offsetof(struct vsm_frame_header, length),
         (unsigned)offsetof(struct vsm_frame_header, code), (unsigned)offsetof(struct vsm_frame_header, id), (unsigned)offsetof(struct vsm_frame_header, status));
  printf("diskio %u\\n", (unsigned)sizeof(struct vsm_disk_io));
  VSM_COMMANDS(PRINT)
  return 0;
}
`
  const out = compileAndRun(src, 'cc', ['-std=c11', '-Wall', '-Wextra', '-pedantic'])
  const lines = out.trim().split('\n')
  assert.is(lines[0], `magic ${MAGIC}`)
  assert.is(lines[1], `header ${HEADER_SIZE} ${HEADER_SIZE}`)
  assert.is(lines[2], 'offsets 0 4 8 12 16')
  assert.is(lines[3], 'diskio 16')
  const cmds = lines.slice(4)
  assert.is(cmds.length, COMMANDS.length)
  COMMANDS.forEach((c, i) => {
    // the last field: the kernel's own _IOC gives the same number on this host
    assert.is(cmds[i], `${macroName(c)} ${c.name} ${c.code} ${c.type} ${c.nr} ${c.standard ? 1 : 0} 1`)
  })
})

t('it compiles as C++ and as C99 without warnings', () => {
  if (!haveCc) return
  const body = '#include "vsm_ioctl.h"\nint main(void) { return VSM_IOC_DISK_CREATE == 0 ? 1 : 0; }\n'
  if (spawnSync('c++', ['--version']).status === 0) compileAndRun(body, 'c++', ['-std=c++11', '-Wall', '-Wextra', '-pedantic'])
  compileAndRun(body, 'cc', ['-std=c99', '-Wall', '-Wextra', '-pedantic'])
})

t('a C program speaks the protocol to a live server using only the header', async () => {
  if (!haveCc) return
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsm-cproto-'))
  const sock = path.join(tmp, 'vsm.sock')
  const server = new ControlServer({ socketPath: sock })
  server.register('L', async (cmd) => ({ echo: cmd.args }))
  await server.listen()
  try {
    const src = `#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "vsm_ioctl.h"
static int readn(int fd, void *b, size_t n) { size_t o = 0; while (o < n) { ssize_t r = read(fd, (char *)b + o, n - o); if (r <= 0) return -1; o += (size_t)r; } return 0; }
int main(int argc, char **argv) {
  struct sockaddr_un a; struct vsm_frame_header h; char buf[65536]; const char *args = "{\\"name\\":\\"v0\\"}";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  (void)argc; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX; strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) return 2;
  if (readn(fd, &h, sizeof h) || h.magic != VSM_FRAME_MAGIC || h.code != VSM_IOC_HELLO || h.id != VSM_UNSOLICITED_ID || h.length > sizeof buf) return 3;
  if (readn(fd, buf, h.length)) return 4;
  h.magic = VSM_FRAME_MAGIC; h.length = (uint32_t)strlen(args); h.code = VSM_IOC_VOLUME_SHOW; h.id = 7; h.status = 0;
  if (write(fd, &h, sizeof h) != sizeof h || write(fd, args, strlen(args)) != (ssize_t)strlen(args)) return 5;
  if (readn(fd, &h, sizeof h) || h.id != 7 || h.code != VSM_IOC_VOLUME_SHOW || h.length >= sizeof buf || readn(fd, buf, h.length)) return 6;
  buf[h.length] = 0; printf("%d %s\\n", h.status, buf);
  h.magic = VSM_FRAME_MAGIC; h.length = 0; h.code = VSM_IOC_REPL_STATUS; h.id = 8;
  if (write(fd, &h, sizeof h) != sizeof h || readn(fd, &h, sizeof h) || h.id != 8 || readn(fd, buf, h.length)) return 7;
  buf[h.length] = 0; printf("%d %s\\n", h.status, buf);
  close(fd); return 0;
}
`
    const bin = path.join(tmp, 'p')
    fs.writeFileSync(bin + '.c', src)
    const cc = spawnSync('cc', ['-std=c11', '-D_DEFAULT_SOURCE', '-Wall', '-Wextra', '-I', includeDir, bin + '.c', '-o', bin], { encoding: 'utf8' })
    assert.is(cc.status, 0, cc.stderr.slice(0, 3000))
    // async spawn: the server answers on this process's event loop
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const ch = spawn(bin, [sock])
      let stdout = ''
      ch.stdout.on('data', (b) => { stdout += b })
      ch.on('close', (code) => resolve({ code, stdout }))
    })
    assert.is(out.code, 0)
    const [ok, nosys] = out.stdout.trim().split('\n')
    assert.is(ok, '0 {"echo":{"name":"v0"}}')
    assert.is(nosys, `-${errnoOf('ENOSYS')} {"error":"ENOSYS","message":"repl.status: the replicator component is not running"}`)
  } finally {
    await server.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
})

t.run()
