// In-band commands on the disk file itself: a C program built here with nothing but
// native/include/vsm_ioctl.h snapshots a disk and reads its info through ioctl(2) on the
// open file in the FUSE view (native binding); codes that name no command fail with
// ENOTTY, and a handle open read-only may look but not change.
import { test } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawnSync } from 'child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { makeVsm } from './helpers/daemon'
import { repoRoot } from '../src/control/gen-header'

const vsm = makeVsm({ deviceSize: '1G', fuse: 'native' })
const tmp = mkdtempSync(join(tmpdir(), 'vsm-ioctl-'))
const bin = join(tmp, 'vsmctl')
test.after(async () => { rmSync(tmp, { recursive: true, force: true }); await vsm.cleanup() })

// usage: vsmctl FILE ro|rw CODE JSON  (CODE: snapshot.create | disk.show | bogus)
const PROGRAM = `
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "vsm_ioctl.h"

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  int fd = open(argv[1], strcmp(argv[2], "rw") == 0 ? O_RDWR : O_RDONLY);
  if (fd < 0) { perror("open"); return 2; }
  unsigned long code = strcmp(argv[3], "snapshot.create") == 0 ? VSM_FILE_IOC(VSM_IOC_SNAPSHOT_CREATE)
                     : strcmp(argv[3], "disk.show") == 0 ? VSM_FILE_IOC(VSM_IOC_DISK_SHOW)
                     : VSM_FILE_IOC(VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0xee, 0));
  static struct vsm_file_cmd c;
  c.len = (uint32_t)strlen(argv[4]);
  memcpy(c.json, argv[4], c.len);
  if (ioctl(fd, code, &c) != 0) { printf("errno %s\\n", errno == ENOTTY ? "ENOTTY" : strerror(errno)); return 1; }
  printf("%d %.*s\\n", c.status, (int)c.len, c.json);
  close(fd);
  return 0;
}
`

function ctl(...args: string[]): { code: number; out: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8' })
  return { code: r.status ?? -1, out: r.stdout.trim() }
}

test('a C program with only vsm_ioctl.h snapshots a disk and reads its info through ioctl on the open file', async () => {
  writeFileSync(join(tmp, 'vsmctl.c'), PROGRAM)
  execFileSync('cc', ['-Wall', '-Werror', '-I', join(repoRoot(__dirname), 'native', 'include'), join(tmp, 'vsmctl.c'), '-o', bin])
  await vsm.up()
  mkdirSync(join(vsm.mount, 'vm'))
  await vsm.run('disk', 'create', 'vm/d.img', '--size', '64M')
  const img = join(vsm.mount, 'vm', 'd.img')
  const snap = ctl(img, 'rw', 'snapshot.create', '{"name":"in-band"}')
  assert.is(snap.code, 0, snap.out)
  const [status, json] = [Number(snap.out.split(' ')[0]), JSON.parse(snap.out.slice(snap.out.indexOf(' ') + 1))]
  assert.is(status, 0, snap.out)
  assert.is(json.name, 'in-band')
  assert.ok(existsSync(join(vsm.mount, '.snapshots', 'vm', 'd.img', 'in-band')), 'the snapshot is in the snapshot view')
  const show = ctl(img, 'ro', 'disk.show', '')
  assert.is(show.code, 0, show.out)
  const info = JSON.parse(show.out.slice(show.out.indexOf(' ') + 1))
  assert.is(info.path, 'vm/d.img')
  assert.is(info.size, 64 << 20)
  assert.is(info.snapshots, 1)
})

test('an error comes back in the struct; a read-only handle may not change; an unknown code is ENOTTY', () => {
  const img = join(vsm.mount, 'vm', 'd.img')
  const dup = ctl(img, 'rw', 'snapshot.create', '{"name":"in-band"}')
  assert.is(dup.code, 0)
  assert.match(dup.out, /^-17 .*"error":"EEXIST"/)
  const ro = ctl(img, 'ro', 'snapshot.create', '{"name":"other"}')
  assert.match(ro.out, /^-9 .*"error":"EBADF"/)
  assert.not.ok(existsSync(join(vsm.mount, '.snapshots', 'vm', 'd.img', 'other')))
  const bad = ctl(img, 'rw', 'bogus', '{}')
  assert.is(bad.code, 1)
  assert.is(bad.out, 'errno ENOTTY')
  const junk = ctl(img, 'rw', 'disk.show', '{not json')
  assert.match(junk.out, /^-22 .*"error":"EINVAL"/)
})

test.run()
