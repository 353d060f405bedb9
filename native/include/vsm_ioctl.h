/* vsm_ioctl.h: command codes and frame layout of the vsm control socket (<home>/vsm.sock).
 *
 * GENERATED from src/control/codes.ts by src/control/gen-header.ts. Do not edit:
 * change the table and run `node dist/src/control/gen-header.js`.
 *
 * A frame is struct vsm_frame_header followed by `length` payload bytes. Every
 * integer on the wire is little-endian, whatever the host. Requests carry JSON for
 * extended commands and struct vsm_disk_io + path (+ data) for the standard disk
 * commands. Replies carry the request's code and id; status is 0 or a negative
 * errno, and an error reply's payload is JSON {"error": "ENOENT", "message": "..."}.
 * The server sends a greeting (VSM_IOC_HELLO) and events (VSM_IOC_EVENT) with
 * id VSM_UNSOLICITED_ID; clients number their requests from 1.
 */
#ifndef VSM_IOCTL_H
#define VSM_IOCTL_H

#include <stdint.h>

#if defined(__cplusplus) && __cplusplus >= 201103L
#define VSM_STATIC_ASSERT(expr, msg) static_assert(expr, msg)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define VSM_STATIC_ASSERT(expr, msg) _Static_assert(expr, msg)
#else /* C99: a negative array size fails the build instead */
#define VSM_CAT_(a, b) a##b
#define VSM_CAT(a, b) VSM_CAT_(a, b)
#define VSM_STATIC_ASSERT(expr, msg) typedef char VSM_CAT(vsm_static_assert_, __LINE__)[(expr) ? 1 : -1]
#endif

/* Code layout: that of <asm-generic/ioctl.h> (_IOC). It is spelled out here instead
 * of using <linux/ioctl.h> because powerpc, mips and sparc split the bits
 * differently and the protocol must not depend on the host; on x86, arm and riscv
 * VSMIOC(d, t, n, s) == _IOC(d, t, n, s). */
#define VSMIOC_NRBITS    8
#define VSMIOC_TYPEBITS  8
#define VSMIOC_SIZEBITS  14
#define VSMIOC_DIRBITS   2
#define VSMIOC_NRSHIFT   0
#define VSMIOC_TYPESHIFT 8
#define VSMIOC_SIZESHIFT 16
#define VSMIOC_DIRSHIFT  30
#define VSMIOC_NONE  0U
#define VSMIOC_WRITE 1U
#define VSMIOC_READ  2U
#define VSMIOC(dir, type, nr, size) \
  ((uint32_t)(((uint32_t)(dir) << VSMIOC_DIRSHIFT) | ((uint32_t)(size) << VSMIOC_SIZESHIFT) | \
              ((uint32_t)(type) << VSMIOC_TYPESHIFT) | ((uint32_t)(nr) << VSMIOC_NRSHIFT)))
#define VSMIOC_DIR(code)  (((uint32_t)(code) >> VSMIOC_DIRSHIFT) & ((1U << VSMIOC_DIRBITS) - 1U))
#define VSMIOC_TYPE(code) (((uint32_t)(code) >> VSMIOC_TYPESHIFT) & ((1U << VSMIOC_TYPEBITS) - 1U))
#define VSMIOC_NR(code)   (((uint32_t)(code) >> VSMIOC_NRSHIFT) & ((1U << VSMIOC_NRBITS) - 1U))
#define VSMIOC_SIZE(code) (((uint32_t)(code) >> VSMIOC_SIZESHIFT) & ((1U << VSMIOC_SIZEBITS) - 1U))

/* Type byte: the component that owns a command. */
#define VSM_TYPE_VIRTUALIZER 'V'
#define VSM_TYPE_FS          'F'
#define VSM_TYPE_VOLUME      'L'
#define VSM_TYPE_REPLICATOR  'R'
#define VSM_TYPE_HSM         'H'
#define VSM_TYPE_SYSTEM      'S'

#define VSM_PROTOCOL_VERSION    1
#define VSM_FRAME_MAGIC         0x314d5356U /* the bytes "VSM1" on the wire */
#define VSM_FRAME_HEADER_SIZE   20
#define VSM_MAX_PAYLOAD_DEFAULT 16777216U /* a larger length field closes the connection */
#define VSM_UNSOLICITED_ID      0U
#define VSM_MAX_PATH            4096

struct vsm_frame_header {
  uint32_t magic;  /* VSM_FRAME_MAGIC */
  uint32_t length; /* payload bytes after this header */
  uint32_t code;   /* VSM_IOC_* */
  uint32_t id;     /* request id, echoed in the reply */
  int32_t status;  /* replies: 0 or -errno */
};

/* Argument of the standard disk commands; followed by path_len bytes of path
 * (UTF-8, relative to the mount, no NUL) and, for VSM_IOC_DISK_WRITE, length data
 * bytes. The disk.read reply is the bytes; the disk.size reply is a u64. */
struct vsm_disk_io {
  uint64_t offset;
  uint32_t length;
  uint32_t path_len;
};

VSM_STATIC_ASSERT(sizeof(struct vsm_frame_header) == VSM_FRAME_HEADER_SIZE, "struct vsm_frame_header");
VSM_STATIC_ASSERT(sizeof(struct vsm_disk_io) == 16, "struct vsm_disk_io");

/* In-band commands on an open disk file in the FUSE view (no socket needed):
 *   struct vsm_file_cmd c = { 0 }; c.len = sprintf(c.json, "{\"name\":\"s1\"}");
 *   ioctl(fd, VSM_FILE_IOC(VSM_IOC_SNAPSHOT_CREATE), &c);
 * json holds the command's JSON arguments (len bytes; "path" defaults to the disk the
 * file is). The reply overwrites it: status 0 and the result as JSON, or -errno and
 * {"error": ..., "message": ...}. ioctl(2) itself fails with ENOTTY for a code that
 * names no command. */
#define VSM_FILE_CMD_JSON_MAX 4088
struct vsm_file_cmd {
  int32_t status;  /* reply: 0 or -errno */
  uint32_t len;    /* bytes of JSON in json, both ways */
  char json[VSM_FILE_CMD_JSON_MAX];
};
VSM_STATIC_ASSERT(sizeof(struct vsm_file_cmd) == 4096, "struct vsm_file_cmd");
/* The ioctl(2) code for a command code: its type and nr, read|write, sizeof(struct vsm_file_cmd). */
#define VSM_FILE_IOC(code) \
  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, VSMIOC_TYPE(code), VSMIOC_NR(code), sizeof(struct vsm_file_cmd))

/* Commands. */
/* disk.read [standard]: read bytes from a virtual disk (binary: struct vsm_disk_io + path; reply: raw bytes) */
#define VSM_IOC_DISK_READ        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x01, 16) /* 0xc0105601 */
/* disk.write [standard]: write bytes to a virtual disk (binary: struct vsm_disk_io + path + data) */
#define VSM_IOC_DISK_WRITE       VSMIOC(VSMIOC_WRITE, 'V', 0x02, 16) /* 0x40105602 */
/* disk.flush [standard]: make everything written to a virtual disk stable (binary: struct vsm_disk_io + path) */
#define VSM_IOC_DISK_FLUSH       VSMIOC(VSMIOC_WRITE, 'V', 0x03, 16) /* 0x40105603 */
/* disk.discard [standard]: discard a byte range of a virtual disk (binary: struct vsm_disk_io + path) */
#define VSM_IOC_DISK_DISCARD     VSMIOC(VSMIOC_WRITE, 'V', 0x04, 16) /* 0x40105604 */
/* disk.size [standard]: size of a virtual disk in bytes (binary: struct vsm_disk_io + path; reply: u64 LE) */
#define VSM_IOC_DISK_SIZE        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x05, 16) /* 0xc0105605 */
/* hello: greeting: version, capabilities and the code table (sent by the server on connect) */
#define VSM_IOC_HELLO            VSMIOC(VSMIOC_READ, 'S', 0x00, 0) /* 0x80005300 */
/* status: daemon status: home, mount, pool, components */
#define VSM_IOC_STATUS           VSMIOC(VSMIOC_READ, 'S', 0x01, 0) /* 0x80005301 */
/* shutdown: flush, unmount and stop the daemon */
#define VSM_IOC_SHUTDOWN         VSMIOC(VSMIOC_NONE, 'S', 0x02, 0) /* 0x00005302 */
/* job.list: list jobs */
#define VSM_IOC_JOB_LIST         VSMIOC(VSMIOC_READ, 'S', 0x10, 0) /* 0x80005310 */
/* job.wait: wait for a job (or all jobs) to conclude */
#define VSM_IOC_JOB_WAIT         VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'S', 0x11, 0) /* 0xc0005311 */
/* job.cancel: cancel a job */
#define VSM_IOC_JOB_CANCEL       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'S', 0x12, 0) /* 0xc0005312 */
/* job.pause: pause a pausable job */
#define VSM_IOC_JOB_PAUSE        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'S', 0x13, 0) /* 0xc0005313 */
/* job.resume: resume a paused job */
#define VSM_IOC_JOB_RESUME       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'S', 0x14, 0) /* 0xc0005314 */
/* events.subscribe: receive event frames (request id 0) on this connection */
#define VSM_IOC_EVENTS_SUBSCRIBE VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'S', 0x20, 0) /* 0xc0005320 */
/* event: an asynchronous event, sent by the server with request id 0 */
#define VSM_IOC_EVENT            VSMIOC(VSMIOC_READ, 'S', 0x21, 0) /* 0x80005321 */
/* disk.create: create a virtual disk */
#define VSM_IOC_DISK_CREATE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x10, 0) /* 0xc0005610 */
/* disk.list: list virtual disks */
#define VSM_IOC_DISK_LIST        VSMIOC(VSMIOC_READ, 'V', 0x11, 0) /* 0x80005611 */
/* disk.show: show a virtual disk */
#define VSM_IOC_DISK_SHOW        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x12, 0) /* 0xc0005612 */
/* disk.resize: resize a virtual disk */
#define VSM_IOC_DISK_RESIZE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x13, 0) /* 0xc0005613 */
/* disk.delete: delete a virtual disk */
#define VSM_IOC_DISK_DELETE      VSMIOC(VSMIOC_WRITE, 'V', 0x14, 0) /* 0x40005614 */
/* disk.clone: clone a disk snapshot into a new disk */
#define VSM_IOC_DISK_CLONE       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x15, 0) /* 0xc0005615 */
/* disk.flatten: make a clone independent of its parent (a job) */
#define VSM_IOC_DISK_FLATTEN     VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x16, 0) /* 0xc0005616 */
/* disk.freeze: hold new writes to a disk and flush it (application-consistent snapshots) */
#define VSM_IOC_DISK_FREEZE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x17, 0) /* 0xc0005617 */
/* disk.thaw: release the writes held by disk.freeze */
#define VSM_IOC_DISK_THAW        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x18, 0) /* 0xc0005618 */
/* disk.check: check a disk for corruption and leaked space */
#define VSM_IOC_DISK_CHECK       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x19, 0) /* 0xc0005619 */
/* disk.map: allocated extents of a disk and which layer holds each, a page at a time (next: where the following page starts) */
#define VSM_IOC_DISK_MAP         VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x1a, 0) /* 0xc000561a */
/* disk.compare: compare the contents of two disks */
#define VSM_IOC_DISK_COMPARE     VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x1b, 0) /* 0xc000561b */
/* snapshot.create: create a snapshot of a disk */
#define VSM_IOC_SNAPSHOT_CREATE  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x20, 0) /* 0xc0005620 */
/* snapshot.list: list the snapshots of a disk */
#define VSM_IOC_SNAPSHOT_LIST    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x21, 0) /* 0xc0005621 */
/* snapshot.revert: revert a disk to a snapshot */
#define VSM_IOC_SNAPSHOT_REVERT  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x22, 0) /* 0xc0005622 */
/* snapshot.delete: delete a snapshot */
#define VSM_IOC_SNAPSHOT_DELETE  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'V', 0x23, 0) /* 0xc0005623 */
/* fs.stat: file system or file statistics */
#define VSM_IOC_FS_STAT          VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x01, 0) /* 0xc0004601 */
/* fs.check: check file system consistency */
#define VSM_IOC_FS_CHECK         VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x02, 0) /* 0xc0004602 */
/* fs.volume.add: add a pool volume to the running file system */
#define VSM_IOC_FS_VOLUME_ADD    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x10, 0) /* 0xc0004610 */
/* fs.volume.remove: move every file off a volume (a job), then drop it from the file system */
#define VSM_IOC_FS_VOLUME_REMOVE VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x11, 0) /* 0xc0004611 */
/* fs.policy.set: place new files under a directory (or only those matching a name pattern) on a volume */
#define VSM_IOC_FS_POLICY_SET    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x20, 0) /* 0xc0004620 */
/* fs.policy.list: list the placement policies */
#define VSM_IOC_FS_POLICY_LIST   VSMIOC(VSMIOC_READ, 'F', 0x21, 0) /* 0x80004621 */
/* fs.move: move a file's extents to another volume while it is in use (a job) */
#define VSM_IOC_FS_MOVE          VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'F', 0x30, 0) /* 0xc0004630 */
/* device.add: add a backing device to the pool */
#define VSM_IOC_DEVICE_ADD       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x01, 0) /* 0xc0004c01 */
/* device.list: list devices */
#define VSM_IOC_DEVICE_LIST      VSMIOC(VSMIOC_READ, 'L', 0x02, 0) /* 0x80004c02 */
/* device.remove: remove a device from the pool */
#define VSM_IOC_DEVICE_REMOVE    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x03, 0) /* 0xc0004c03 */
/* device.offline: take a device out of service (its volumes run degraded) */
#define VSM_IOC_DEVICE_OFFLINE   VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x04, 0) /* 0xc0004c04 */
/* device.online: bring a device back and resync what it missed (a job) */
#define VSM_IOC_DEVICE_ONLINE    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x05, 0) /* 0xc0004c05 */
/* volume.create: create a volume */
#define VSM_IOC_VOLUME_CREATE    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x10, 0) /* 0xc0004c10 */
/* volume.list: list volumes */
#define VSM_IOC_VOLUME_LIST      VSMIOC(VSMIOC_READ, 'L', 0x11, 0) /* 0x80004c11 */
/* volume.show: show a volume */
#define VSM_IOC_VOLUME_SHOW      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x12, 0) /* 0xc0004c12 */
/* volume.grow: grow a volume */
#define VSM_IOC_VOLUME_GROW      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x13, 0) /* 0xc0004c13 */
/* volume.move: move a volume (or part of it) to other devices */
#define VSM_IOC_VOLUME_MOVE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x14, 0) /* 0xc0004c14 */
/* volume.relayout: change the layout of a volume online */
#define VSM_IOC_VOLUME_RELAYOUT  VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x15, 0) /* 0xc0004c15 */
/* volume.replace: replace a device of a volume */
#define VSM_IOC_VOLUME_REPLACE   VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x16, 0) /* 0xc0004c16 */
/* volume.scrub: verify and repair redundancy of a volume */
#define VSM_IOC_VOLUME_SCRUB     VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'L', 0x17, 0) /* 0xc0004c17 */
/* pool.history: the recent versions of the pool configuration: seq, time and what each changed */
#define VSM_IOC_POOL_HISTORY     VSMIOC(VSMIOC_READ, 'L', 0x20, 0) /* 0x80004c20 */
/* repl.create: create a replicated volume group */
#define VSM_IOC_REPL_CREATE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x01, 0) /* 0xc0005201 */
/* repl.status: replication link state, lag and log fill */
#define VSM_IOC_REPL_STATUS      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x02, 0) /* 0xc0005202 */
/* repl.pause: pause replication of a group */
#define VSM_IOC_REPL_PAUSE       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x03, 0) /* 0xc0005203 */
/* repl.resume: resume replication of a group */
#define VSM_IOC_REPL_RESUME      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x04, 0) /* 0xc0005204 */
/* repl.verify: compare primary and secondary */
#define VSM_IOC_REPL_VERIFY      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x05, 0) /* 0xc0005205 */
/* repl.takeover: promote the secondary: it serves the group from its replicas */
#define VSM_IOC_REPL_TAKEOVER    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x06, 0) /* 0xc0005206 */
/* repl.failback: delta resync back to the old primary */
#define VSM_IOC_REPL_FAILBACK    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x07, 0) /* 0xc0005207 */
/* repl.set: change the mode, rate limit (0: none) or sync-fallback timeout of a group */
#define VSM_IOC_REPL_SET         VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x09, 0) /* 0xc0005209 */
/* repl.schedule: consistent points of every disk on a schedule, kept on both sites; lists the points */
#define VSM_IOC_REPL_SCHEDULE    VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'R', 0x08, 0) /* 0xc0005208 */
/* hsm.tier.add: add a storage tier: a volume the file system spans, or an archive (a directory or sftp://) */
#define VSM_IOC_HSM_TIER_ADD     VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x01, 0) /* 0xc0004801 */
/* hsm.policy.set: set a migration policy on a path (inherited down the tree) */
#define VSM_IOC_HSM_POLICY_SET   VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x02, 0) /* 0xc0004802 */
/* hsm.migrate: migrate a file to a tier (a job) */
#define VSM_IOC_HSM_MIGRATE      VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x03, 0) /* 0xc0004803 */
/* hsm.recall: recall a migrated file (or bytes A-B of it) to the volume it came from (a job) */
#define VSM_IOC_HSM_RECALL       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x04, 0) /* 0xc0004804 */
/* hsm.pin: pin a file: policy runs never migrate it */
#define VSM_IOC_HSM_PIN          VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x05, 0) /* 0xc0004805 */
/* hsm.unpin: unpin a file */
#define VSM_IOC_HSM_UNPIN        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x06, 0) /* 0xc0004806 */
/* hsm.status: per file the bytes on each tier, totals per tier */
#define VSM_IOC_HSM_STATUS       VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x07, 0) /* 0xc0004807 */
/* hsm.tier.list: list the tiers with capacity and use */
#define VSM_IOC_HSM_TIER_LIST    VSMIOC(VSMIOC_READ, 'H', 0x08, 0) /* 0x80004808 */
/* hsm.run: run the migration policies now (a job) */
#define VSM_IOC_HSM_RUN          VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x09, 0) /* 0xc0004809 */
/* hsm.check: find (and remove) archive objects nothing points into; report missing ones */
#define VSM_IOC_HSM_CHECK        VSMIOC(VSMIOC_READ | VSMIOC_WRITE, 'H', 0x0a, 0) /* 0xc000480a */

/* The numbers themselves, so a mistake in the macros above cannot go unnoticed. */
VSM_STATIC_ASSERT(VSM_IOC_DISK_READ == 0xc0105601U, "disk.read");
VSM_STATIC_ASSERT(VSM_IOC_DISK_WRITE == 0x40105602U, "disk.write");
VSM_STATIC_ASSERT(VSM_IOC_DISK_FLUSH == 0x40105603U, "disk.flush");
VSM_STATIC_ASSERT(VSM_IOC_DISK_DISCARD == 0x40105604U, "disk.discard");
VSM_STATIC_ASSERT(VSM_IOC_DISK_SIZE == 0xc0105605U, "disk.size");
VSM_STATIC_ASSERT(VSM_IOC_HELLO == 0x80005300U, "hello");
VSM_STATIC_ASSERT(VSM_IOC_STATUS == 0x80005301U, "status");
VSM_STATIC_ASSERT(VSM_IOC_SHUTDOWN == 0x00005302U, "shutdown");
VSM_STATIC_ASSERT(VSM_IOC_JOB_LIST == 0x80005310U, "job.list");
VSM_STATIC_ASSERT(VSM_IOC_JOB_WAIT == 0xc0005311U, "job.wait");
VSM_STATIC_ASSERT(VSM_IOC_JOB_CANCEL == 0xc0005312U, "job.cancel");
VSM_STATIC_ASSERT(VSM_IOC_JOB_PAUSE == 0xc0005313U, "job.pause");
VSM_STATIC_ASSERT(VSM_IOC_JOB_RESUME == 0xc0005314U, "job.resume");
VSM_STATIC_ASSERT(VSM_IOC_EVENTS_SUBSCRIBE == 0xc0005320U, "events.subscribe");
VSM_STATIC_ASSERT(VSM_IOC_EVENT == 0x80005321U, "event");
VSM_STATIC_ASSERT(VSM_IOC_DISK_CREATE == 0xc0005610U, "disk.create");
VSM_STATIC_ASSERT(VSM_IOC_DISK_LIST == 0x80005611U, "disk.list");
VSM_STATIC_ASSERT(VSM_IOC_DISK_SHOW == 0xc0005612U, "disk.show");
VSM_STATIC_ASSERT(VSM_IOC_DISK_RESIZE == 0xc0005613U, "disk.resize");
VSM_STATIC_ASSERT(VSM_IOC_DISK_DELETE == 0x40005614U, "disk.delete");
VSM_STATIC_ASSERT(VSM_IOC_DISK_CLONE == 0xc0005615U, "disk.clone");
VSM_STATIC_ASSERT(VSM_IOC_DISK_FLATTEN == 0xc0005616U, "disk.flatten");
VSM_STATIC_ASSERT(VSM_IOC_DISK_FREEZE == 0xc0005617U, "disk.freeze");
VSM_STATIC_ASSERT(VSM_IOC_DISK_THAW == 0xc0005618U, "disk.thaw");
VSM_STATIC_ASSERT(VSM_IOC_DISK_CHECK == 0xc0005619U, "disk.check");
VSM_STATIC_ASSERT(VSM_IOC_DISK_MAP == 0xc000561aU, "disk.map");
VSM_STATIC_ASSERT(VSM_IOC_DISK_COMPARE == 0xc000561bU, "disk.compare");
VSM_STATIC_ASSERT(VSM_IOC_SNAPSHOT_CREATE == 0xc0005620U, "snapshot.create");
VSM_STATIC_ASSERT(VSM_IOC_SNAPSHOT_LIST == 0xc0005621U, "snapshot.list");
VSM_STATIC_ASSERT(VSM_IOC_SNAPSHOT_REVERT == 0xc0005622U, "snapshot.revert");
VSM_STATIC_ASSERT(VSM_IOC_SNAPSHOT_DELETE == 0xc0005623U, "snapshot.delete");
VSM_STATIC_ASSERT(VSM_IOC_FS_STAT == 0xc0004601U, "fs.stat");
VSM_STATIC_ASSERT(VSM_IOC_FS_CHECK == 0xc0004602U, "fs.check");
VSM_STATIC_ASSERT(VSM_IOC_FS_VOLUME_ADD == 0xc0004610U, "fs.volume.add");
VSM_STATIC_ASSERT(VSM_IOC_FS_VOLUME_REMOVE == 0xc0004611U, "fs.volume.remove");
VSM_STATIC_ASSERT(VSM_IOC_FS_POLICY_SET == 0xc0004620U, "fs.policy.set");
VSM_STATIC_ASSERT(VSM_IOC_FS_POLICY_LIST == 0x80004621U, "fs.policy.list");
VSM_STATIC_ASSERT(VSM_IOC_FS_MOVE == 0xc0004630U, "fs.move");
VSM_STATIC_ASSERT(VSM_IOC_DEVICE_ADD == 0xc0004c01U, "device.add");
VSM_STATIC_ASSERT(VSM_IOC_DEVICE_LIST == 0x80004c02U, "device.list");
VSM_STATIC_ASSERT(VSM_IOC_DEVICE_REMOVE == 0xc0004c03U, "device.remove");
VSM_STATIC_ASSERT(VSM_IOC_DEVICE_OFFLINE == 0xc0004c04U, "device.offline");
VSM_STATIC_ASSERT(VSM_IOC_DEVICE_ONLINE == 0xc0004c05U, "device.online");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_CREATE == 0xc0004c10U, "volume.create");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_LIST == 0x80004c11U, "volume.list");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_SHOW == 0xc0004c12U, "volume.show");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_GROW == 0xc0004c13U, "volume.grow");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_MOVE == 0xc0004c14U, "volume.move");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_RELAYOUT == 0xc0004c15U, "volume.relayout");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_REPLACE == 0xc0004c16U, "volume.replace");
VSM_STATIC_ASSERT(VSM_IOC_VOLUME_SCRUB == 0xc0004c17U, "volume.scrub");
VSM_STATIC_ASSERT(VSM_IOC_POOL_HISTORY == 0x80004c20U, "pool.history");
VSM_STATIC_ASSERT(VSM_IOC_REPL_CREATE == 0xc0005201U, "repl.create");
VSM_STATIC_ASSERT(VSM_IOC_REPL_STATUS == 0xc0005202U, "repl.status");
VSM_STATIC_ASSERT(VSM_IOC_REPL_PAUSE == 0xc0005203U, "repl.pause");
VSM_STATIC_ASSERT(VSM_IOC_REPL_RESUME == 0xc0005204U, "repl.resume");
VSM_STATIC_ASSERT(VSM_IOC_REPL_VERIFY == 0xc0005205U, "repl.verify");
VSM_STATIC_ASSERT(VSM_IOC_REPL_TAKEOVER == 0xc0005206U, "repl.takeover");
VSM_STATIC_ASSERT(VSM_IOC_REPL_FAILBACK == 0xc0005207U, "repl.failback");
VSM_STATIC_ASSERT(VSM_IOC_REPL_SET == 0xc0005209U, "repl.set");
VSM_STATIC_ASSERT(VSM_IOC_REPL_SCHEDULE == 0xc0005208U, "repl.schedule");
VSM_STATIC_ASSERT(VSM_IOC_HSM_TIER_ADD == 0xc0004801U, "hsm.tier.add");
VSM_STATIC_ASSERT(VSM_IOC_HSM_POLICY_SET == 0xc0004802U, "hsm.policy.set");
VSM_STATIC_ASSERT(VSM_IOC_HSM_MIGRATE == 0xc0004803U, "hsm.migrate");
VSM_STATIC_ASSERT(VSM_IOC_HSM_RECALL == 0xc0004804U, "hsm.recall");
VSM_STATIC_ASSERT(VSM_IOC_HSM_PIN == 0xc0004805U, "hsm.pin");
VSM_STATIC_ASSERT(VSM_IOC_HSM_UNPIN == 0xc0004806U, "hsm.unpin");
VSM_STATIC_ASSERT(VSM_IOC_HSM_STATUS == 0xc0004807U, "hsm.status");
VSM_STATIC_ASSERT(VSM_IOC_HSM_TIER_LIST == 0x80004808U, "hsm.tier.list");
VSM_STATIC_ASSERT(VSM_IOC_HSM_RUN == 0xc0004809U, "hsm.run");
VSM_STATIC_ASSERT(VSM_IOC_HSM_CHECK == 0xc000480aU, "hsm.check");

/* Every command, for tables: X(MACRO, name, type, nr, standard). */
#define VSM_COMMANDS(X) \
  X(VSM_IOC_DISK_READ, "disk.read", 'V', 0x01, 1) \
  X(VSM_IOC_DISK_WRITE, "disk.write", 'V', 0x02, 1) \
  X(VSM_IOC_DISK_FLUSH, "disk.flush", 'V', 0x03, 1) \
  X(VSM_IOC_DISK_DISCARD, "disk.discard", 'V', 0x04, 1) \
  X(VSM_IOC_DISK_SIZE, "disk.size", 'V', 0x05, 1) \
  X(VSM_IOC_HELLO, "hello", 'S', 0x00, 0) \
  X(VSM_IOC_STATUS, "status", 'S', 0x01, 0) \
  X(VSM_IOC_SHUTDOWN, "shutdown", 'S', 0x02, 0) \
  X(VSM_IOC_JOB_LIST, "job.list", 'S', 0x10, 0) \
  X(VSM_IOC_JOB_WAIT, "job.wait", 'S', 0x11, 0) \
  X(VSM_IOC_JOB_CANCEL, "job.cancel", 'S', 0x12, 0) \
  X(VSM_IOC_JOB_PAUSE, "job.pause", 'S', 0x13, 0) \
  X(VSM_IOC_JOB_RESUME, "job.resume", 'S', 0x14, 0) \
  X(VSM_IOC_EVENTS_SUBSCRIBE, "events.subscribe", 'S', 0x20, 0) \
  X(VSM_IOC_EVENT, "event", 'S', 0x21, 0) \
  X(VSM_IOC_DISK_CREATE, "disk.create", 'V', 0x10, 0) \
  X(VSM_IOC_DISK_LIST, "disk.list", 'V', 0x11, 0) \
  X(VSM_IOC_DISK_SHOW, "disk.show", 'V', 0x12, 0) \
  X(VSM_IOC_DISK_RESIZE, "disk.resize", 'V', 0x13, 0) \
  X(VSM_IOC_DISK_DELETE, "disk.delete", 'V', 0x14, 0) \
  X(VSM_IOC_DISK_CLONE, "disk.clone", 'V', 0x15, 0) \
  X(VSM_IOC_DISK_FLATTEN, "disk.flatten", 'V', 0x16, 0) \
  X(VSM_IOC_DISK_FREEZE, "disk.freeze", 'V', 0x17, 0) \
  X(VSM_IOC_DISK_THAW, "disk.thaw", 'V', 0x18, 0) \
  X(VSM_IOC_DISK_CHECK, "disk.check", 'V', 0x19, 0) \
  X(VSM_IOC_DISK_MAP, "disk.map", 'V', 0x1a, 0) \
  X(VSM_IOC_DISK_COMPARE, "disk.compare", 'V', 0x1b, 0) \
  X(VSM_IOC_SNAPSHOT_CREATE, "snapshot.create", 'V', 0x20, 0) \
  X(VSM_IOC_SNAPSHOT_LIST, "snapshot.list", 'V', 0x21, 0) \
  X(VSM_IOC_SNAPSHOT_REVERT, "snapshot.revert", 'V', 0x22, 0) \
  X(VSM_IOC_SNAPSHOT_DELETE, "snapshot.delete", 'V', 0x23, 0) \
  X(VSM_IOC_FS_STAT, "fs.stat", 'F', 0x01, 0) \
  X(VSM_IOC_FS_CHECK, "fs.check", 'F', 0x02, 0) \
  X(VSM_IOC_FS_VOLUME_ADD, "fs.volume.add", 'F', 0x10, 0) \
  X(VSM_IOC_FS_VOLUME_REMOVE, "fs.volume.remove", 'F', 0x11, 0) \
  X(VSM_IOC_FS_POLICY_SET, "fs.policy.set", 'F', 0x20, 0) \
  X(VSM_IOC_FS_POLICY_LIST, "fs.policy.list", 'F', 0x21, 0) \
  X(VSM_IOC_FS_MOVE, "fs.move", 'F', 0x30, 0) \
  X(VSM_IOC_DEVICE_ADD, "device.add", 'L', 0x01, 0) \
  X(VSM_IOC_DEVICE_LIST, "device.list", 'L', 0x02, 0) \
  X(VSM_IOC_DEVICE_REMOVE, "device.remove", 'L', 0x03, 0) \
  X(VSM_IOC_DEVICE_OFFLINE, "device.offline", 'L', 0x04, 0) \
  X(VSM_IOC_DEVICE_ONLINE, "device.online", 'L', 0x05, 0) \
  X(VSM_IOC_VOLUME_CREATE, "volume.create", 'L', 0x10, 0) \
  X(VSM_IOC_VOLUME_LIST, "volume.list", 'L', 0x11, 0) \
  X(VSM_IOC_VOLUME_SHOW, "volume.show", 'L', 0x12, 0) \
  X(VSM_IOC_VOLUME_GROW, "volume.grow", 'L', 0x13, 0) \
  X(VSM_IOC_VOLUME_MOVE, "volume.move", 'L', 0x14, 0) \
  X(VSM_IOC_VOLUME_RELAYOUT, "volume.relayout", 'L', 0x15, 0) \
  X(VSM_IOC_VOLUME_REPLACE, "volume.replace", 'L', 0x16, 0) \
  X(VSM_IOC_VOLUME_SCRUB, "volume.scrub", 'L', 0x17, 0) \
  X(VSM_IOC_POOL_HISTORY, "pool.history", 'L', 0x20, 0) \
  X(VSM_IOC_REPL_CREATE, "repl.create", 'R', 0x01, 0) \
  X(VSM_IOC_REPL_STATUS, "repl.status", 'R', 0x02, 0) \
  X(VSM_IOC_REPL_PAUSE, "repl.pause", 'R', 0x03, 0) \
  X(VSM_IOC_REPL_RESUME, "repl.resume", 'R', 0x04, 0) \
  X(VSM_IOC_REPL_VERIFY, "repl.verify", 'R', 0x05, 0) \
  X(VSM_IOC_REPL_TAKEOVER, "repl.takeover", 'R', 0x06, 0) \
  X(VSM_IOC_REPL_FAILBACK, "repl.failback", 'R', 0x07, 0) \
  X(VSM_IOC_REPL_SET, "repl.set", 'R', 0x09, 0) \
  X(VSM_IOC_REPL_SCHEDULE, "repl.schedule", 'R', 0x08, 0) \
  X(VSM_IOC_HSM_TIER_ADD, "hsm.tier.add", 'H', 0x01, 0) \
  X(VSM_IOC_HSM_POLICY_SET, "hsm.policy.set", 'H', 0x02, 0) \
  X(VSM_IOC_HSM_MIGRATE, "hsm.migrate", 'H', 0x03, 0) \
  X(VSM_IOC_HSM_RECALL, "hsm.recall", 'H', 0x04, 0) \
  X(VSM_IOC_HSM_PIN, "hsm.pin", 'H', 0x05, 0) \
  X(VSM_IOC_HSM_UNPIN, "hsm.unpin", 'H', 0x06, 0) \
  X(VSM_IOC_HSM_STATUS, "hsm.status", 'H', 0x07, 0) \
  X(VSM_IOC_HSM_TIER_LIST, "hsm.tier.list", 'H', 0x08, 0) \
  X(VSM_IOC_HSM_RUN, "hsm.run", 'H', 0x09, 0) \
  X(VSM_IOC_HSM_CHECK, "hsm.check", 'H', 0x0a, 0)

#endif /* VSM_IOCTL_H */
