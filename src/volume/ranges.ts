// Byte or block ranges [lo, hi) as the volume layer passes them around (dirty regions,
// what a copy missed, what a checksum table says was written).

/** The ranges sorted and merged where they overlap or touch. */
export function mergeRanges(rs: [number, number][]): [number, number][] {
  const out: [number, number][] = []
  for (const r of [...rs].sort((a, b) => a[0] - b[0])) {
    const prev = out[out.length - 1]
    if (prev && r[0] <= prev[1]) prev[1] = Math.max(prev[1], r[1]); else out.push([r[0], r[1]])
  }
  return out
}
