// The archive store, one suite run against each backend: a directory, and SFTP to a
// real OpenSSH sshd on 127.0.0.1 started here (key login, host key checked). Objects
// come back byte for byte in any range; a flipped, truncated or foreign byte is EIO, not
// data; an overwrite is whole or absent; no temporary is left or listed; bad keys and
// ranges are refused. Then SFTP alone: an unknown or changed host key is refused before
// anything is written, a wrong path is refused, and a dropped connection is remade.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { randomBytes } from 'crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { CSUM_BS, openArchive, type ArchiveSpec, type ArchiveStore } from '../src/hsm/archive'
import { keygen, startSshd, type Sshd } from './helpers/sshd'

const root = mkdtempSync(join(tmpdir(), `vsm-test-${process.env.VSM_RUNNER_ID ?? 'solo'}-archive-`))
let sshd: Sshd | null = null

async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  try { await p } catch (e) {
    assert.is((e as { code?: string }).code, code, (e as Error).message)
    if (re) assert.match((e as Error).message, re)
    return
  }
  assert.unreachable(`expected ${code}`)
}

/** One backend under test: its spec and the local directory its objects land in. */
interface Backend { name: string; dir: string; spec: () => ArchiveSpec }

function archiveSuite(b: Backend): void {
  const t = suite(`archive store [${b.name}]`)
  let a: ArchiveStore
  t.before.each(() => {
    rmSync(b.dir, { recursive: true, force: true })
    mkdirSync(b.dir)
    a = openArchive(b.spec())
  })
  t.after.each(async () => { await a.close() })

  t('objects come back byte for byte, whole and in any range', async () => {
    await a.probe()
    const data = randomBytes(3 * CSUM_BS + 123)
    await a.put('o1', data)
    assert.ok((await a.get('o1', 0, data.length)).equals(data))
    for (const [off, len] of [[0, 1], [CSUM_BS - 1, 2], [5000, 7000], [3 * CSUM_BS, 123], [data.length - 1, 1], [17, 0]]) {
      assert.ok((await a.get('o1', off, len)).equals(data.subarray(off, off + len)), `range ${off}+${len}`)
    }
    await a.put('empty', Buffer.alloc(0))
    assert.is((await a.get('empty', 0, 0)).length, 0)
    assert.equal(await a.list(), ['empty', 'o1'])
  })

  t('a changed, truncated or foreign object is EIO, never data', async () => {
    const data = randomBytes(4 * CSUM_BS)
    await a.put('c', data)
    const file = join(b.dir, 'c')
    const stored = readFileSync(file)
    const flipped = Buffer.from(stored)
    flipped[stored.length - CSUM_BS - 10] ^= 1 // in the third block
    writeFileSync(file, flipped)
    await rejects(a.get('c', 2 * CSUM_BS, 10), 'EIO', /checksum mismatch in bytes 8192\.\.12288/)
    assert.ok((await a.get('c', 0, 2 * CSUM_BS)).equals(data.subarray(0, 2 * CSUM_BS)), 'untouched blocks still read')
    const badHeader = Buffer.from(stored)
    badHeader[20] ^= 1
    writeFileSync(file, badHeader)
    await rejects(a.get('c', 0, 1), 'EIO', /header checksum/)
    writeFileSync(file, stored)
    truncateSync(file, stored.length - 100)
    await rejects(a.get('c', 3 * CSUM_BS, CSUM_BS), 'EIO', /truncated/)
    writeFileSync(file, randomBytes(200))
    await rejects(a.get('c', 0, 1), 'EIO', /not an archive object/)
  })

  t('an overwrite replaces the object whole; delete and missing objects', async () => {
    await a.put('k', Buffer.alloc(10_000, 1))
    await a.put('k', Buffer.alloc(5000, 2))
    assert.ok((await a.get('k', 0, 5000)).equals(Buffer.alloc(5000, 2)))
    await rejects(a.get('k', 4000, 2000), 'EINVAL', /past the end/)
    await a.delete('k')
    await a.delete('k')
    await rejects(a.get('k', 0, 1), 'ENOENT')
    assert.equal(await a.list(), [])
  })

  t('no temporary is left behind, and one an interrupted write left is not listed', async () => {
    await Promise.all(Array.from({ length: 8 }, (_, i) => a.put(`p${i}`, randomBytes(CSUM_BS * (i + 1)))))
    assert.equal(readdirSync(b.dir).sort(), Array.from({ length: 8 }, (_, i) => `p${i}`))
    writeFileSync(join(b.dir, '.tmp-p9-abcdef'), 'half an object')
    assert.equal((await a.list()).length, 8)
  })

  t('bad keys and ranges are refused', async () => {
    for (const k of ['', '../x', 'a/b', '.tmp-x', '-x', 'x'.repeat(200)]) await rejects(a.put(k, Buffer.alloc(1)), 'EINVAL')
    await a.put('r', Buffer.alloc(100))
    await rejects(a.get('r', -1, 1), 'EINVAL')
    await rejects(a.get('r', 0, 1.5), 'EINVAL')
    assert.equal(readdirSync(b.dir), ['r'])
  })

  t.run()
}

const dirBackend: Backend = { name: 'dir', dir: join(root, 'dir'), spec: () => ({ archive: join(root, 'dir') }) }
archiveSuite(dirBackend)

const sftpDir = join(root, 'sftp')
const sftpUrl = () => `sftp://root@127.0.0.1:${sshd!.port}${sftpDir}`
const sftpSpec = () => ({ archive: sftpUrl(), identity: sshd!.identity, knownHosts: sshd!.knownHosts })
const sftpBackend: Backend = { name: 'sftp', dir: sftpDir, spec: sftpSpec }

const start = suite('sshd')
start('starts', async () => {
  mkdirSync(join(root, 'ssh'))
  sshd = await startSshd(join(root, 'ssh'))
})
start.run()

archiveSuite(sftpBackend)

const s = suite('archive store [sftp only]')
s.after(() => {
  sshd?.stop()
  rmSync(root, { recursive: true, force: true })
})

s('an unknown or changed host key is refused before anything is written', async () => {
  mkdirSync(sftpDir, { recursive: true })
  const empty = join(root, 'empty_known_hosts'), wrong = join(root, 'wrong_known_hosts')
  writeFileSync(empty, '')
  keygen(join(root, 'other-host'))
  writeFileSync(wrong, sshd!.hostLine(join(root, 'other-host.pub')))
  for (const [kh, re] of [[empty, /not in .*refusing an unknown host key/], [wrong, /does not match/]] as const) {
    const a = openArchive({ ...sftpSpec(), knownHosts: kh })
    try { await rejects(a.put('x', Buffer.alloc(10)), 'EACCES', re) } finally { await a.close() }
  }
  assert.equal(readdirSync(sftpDir).filter((n) => n === 'x'), [])
})

s('a path that is not a directory on the server is refused; a malformed URL too', async () => {
  const a = openArchive({ ...sftpSpec(), archive: `sftp://root@127.0.0.1:${sshd!.port}${root}/nowhere` })
  try { await rejects(a.probe(), 'ENOENT') } finally { await a.close() }
  for (const bad of ['sftp://127.0.0.1/x', 'sftp://root@host:99999/x', 'sftp://root@host/a/../b', 'relative/dir']) {
    assert.throws(() => openArchive({ archive: bad }), (e: { code?: string }) => e.code === 'EINVAL', bad)
  }
})

s('a dropped connection is made again by the next call', async () => {
  const a = openArchive(sftpSpec())
  try {
    await a.put('d1', Buffer.alloc(100, 7))
    // kill the server-side session: every sshd child of the listener serves one connection
    const pid = readFileSync(join(root, 'ssh', 'sshd.pid'), 'utf8').trim()
    for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try { if (readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ')[1] === pid) process.kill(Number(p), 'SIGKILL') } catch { /* gone */ }
    }
    let got: Buffer | null = null
    const deadline = Date.now() + 20_000
    while (!got) {
      try { got = await a.get('d1', 0, 100) } catch (e) {
        if (Date.now() > deadline) throw e
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    assert.ok(got.equals(Buffer.alloc(100, 7)))
  } finally { await a.close() }
})

s.run()
