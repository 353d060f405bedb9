// Sizes as users type them (512, 64K, 8G, 1.5T: binary multiples) and as we print them.
import { VsmError } from '../block/blockdev'

const MULT: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 }

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text)
  if (!m) throw new VsmError('EINVAL', `not a size: '${text}' (use a number with an optional K, M, G or T suffix)`)
  const n = Math.round(Number(m[1]) * MULT[m[2].toUpperCase()])
  if (!Number.isSafeInteger(n)) throw new VsmError('EINVAL', `size out of range: '${text}'`)
  return n
}

export function formatSize(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T', 'P']
  let i = 0, v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return i === 0 ? `${n}B` : `${v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1)}${units[i]}`
}

/** A whole number of things (copies, devices) given on the command line. */
export function parseCount(text: string, what: string): number {
  if (!/^\s*\d{1,6}\s*$/.test(text)) throw new VsmError('EINVAL', `${what} must be a whole number, not '${text}'`)
  return Number(text)
}

const SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }

/** Durations as users type them: 500ms, 60s, 5m, 7d (a bare number is seconds). */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(text)
  if (!m) throw new VsmError('EINVAL', `not a duration: '${text}' (use e.g. 500ms, 60s, 5m, 7d)`)
  return Math.round(Number(m[1]) * SECONDS[(m[2] ?? 's').toLowerCase()] * 1000)
}

const two = (n: number) => String(n).padStart(2, '0')

/** Epoch milliseconds as local time, YYYY-MM-DD HH:MM:SS (the machine's time zone, as ls -l and date show). */
export function formatDate(ms: number): string {
  const d = new Date(ms)
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
}
