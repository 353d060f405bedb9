// Byte or block ranges [lo, hi) as the layers pass them around (dirty regions, changed
// parts of an extent map, what a copy missed, what a checksum table says was written).

/** The ranges sorted and merged where they overlap or touch. */
export function mergeRanges(rs: [number, number][]): [number, number][] {
  const out: [number, number][] = []
  for (const r of [...rs].sort((a, b) => a[0] - b[0])) {
    const prev = out[out.length - 1]
    if (prev && r[0] <= prev[1]) prev[1] = Math.max(prev[1], r[1]); else out.push([r[0], r[1]])
  }
  return out
}

/** The parts of ranges a (sorted, disjoint) that lie in ranges b (sorted, disjoint). */
export function intersectRanges(a: [number, number][], b: [number, number][]): [number, number][] {
  const out: [number, number][] = []
  for (let i = 0, j = 0; i < a.length && j < b.length;) {
    const lo = Math.max(a[i][0], b[j][0]), hi = Math.min(a[i][1], b[j][1])
    if (lo < hi) out.push([lo, hi])
    if (a[i][1] < b[j][1]) i++; else j++
  }
  return out
}

/** Total length of ranges. */
export function rangesBytes(rs: [number, number][]): number {
  return rs.reduce((s, [lo, hi]) => s + hi - lo, 0)
}
