// The metrics endpoint: GET /metrics over HTTP on a loopback address only (the metrics
// name every disk; anything wider is for a proxy the operator sets up on purpose).
import * as http from 'http'
import { BlockList, isIP } from 'net'
import { VsmError } from '../block/blockdev'
import type { Metrics } from './metrics'

export interface Listen { host: string; port: number }

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** "127.0.0.1:9100", "[::1]:9100" (port 0: any free port); refuses names and non-loopback addresses. */
export function parseListen(text: string): Listen {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text)
  if (!m) throw new VsmError('EINVAL', `--metrics wants HOST:PORT on a loopback address, e.g. 127.0.0.1:9100 (got '${text}')`)
  const host = m[1] ?? m[2]
  const port = Number(m[3])
  if (port > 65535) throw new VsmError('EINVAL', `--metrics: port ${port} is out of range`)
  if (!isIP(host) || !LOOPBACK.check(host, isIP(host) === 6 ? 'ipv6' : 'ipv4')) throw new VsmError('EINVAL', `--metrics: ${host} is not a loopback address (127.0.0.0/8 or ::1); vsm serves metrics to this host only`)
  return { host, port }
}

export class MetricsServer {
  private server: http.Server | null = null

  constructor(private readonly metrics: Metrics, private readonly onError: (err: unknown) => void) {}

  /** Resolves with the address actually bound (the port chosen when 0 was asked). */
  async listen(at: Listen): Promise<Listen> {
    const server = http.createServer((req, res) => this.serve(req, res))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(at.port, at.host, () => { server.off('error', reject); resolve() })
    })
    server.on('error', this.onError)
    this.server = server
    const a = server.address() as { address: string; port: number }
    return { host: a.address, port: a.port }
  }

  async close(): Promise<void> {
    const s = this.server
    if (!s) return
    this.server = null
    s.closeAllConnections()
    await new Promise<void>((resolve) => s.close(() => resolve()))
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/metrics') { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n'); return }
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return }
    this.metrics.scrape().then(
      (text) => { res.writeHead(200, { 'content-type': this.metrics.contentType }).end(req.method === 'HEAD' ? undefined : text) },
      (err) => { this.onError(err); res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed; see the vsm log\n') },
    )
  }
}
