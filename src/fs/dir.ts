// A directory's names: name → inode number, in the order they were added (readdir's, and
// the order each bucket of a large directory's names is written in: state.ts). For the
// checkpoint of a large directory, which rewrites only the buckets whose names changed,
// it can also keep its names by bucket (namesIn), so that finding a bucket's names does
// not mean hashing every name of the directory at every checkpoint (with 100k names,
// that walk was a fifth of a checkpoint after one create).

/** FNV-1a over the name's UTF-16 units: which bucket holds it. */
export function nameHash(name: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193)
  return h >>> 0
}

export class Dir extends Map<string, number> {
  /** The names by bucket (hash & (length - 1)), each in the order added, once namesIn was asked for. */
  private buckets: Set<string>[] | null = null

  /** From entries in the order to keep (a plain Map's constructor would call set before the fields exist). */
  static of(entries: Iterable<readonly [string, number]>): Dir {
    const d = new Dir()
    for (const [name, ino] of entries) d.set(name, ino)
    return d
  }

  set(name: string, ino: number): this {
    if (this.buckets && !this.has(name)) this.buckets[nameHash(name) & (this.buckets.length - 1)].add(name)
    return super.set(name, ino)
  }

  delete(name: string): boolean {
    if (!super.delete(name)) return false
    this.buckets?.[nameHash(name) & (this.buckets.length - 1)].delete(name)
    return true
  }

  clear(): void {
    super.clear()
    this.buckets = null
  }

  /**
   * The names of bucket b of `count` (a power of two), in the order they were added, as
   * the directory's whole image would bucket them. Kept from then on while the count
   * stays; another count sorts them again (the checkpoint rewrites the whole directory
   * when its count changes).
   */
  namesIn(b: number, count: number): Iterable<string> {
    if (this.buckets?.length !== count) {
      const buckets: Set<string>[] = Array.from({ length: count }, () => new Set())
      for (const name of this.keys()) buckets[nameHash(name) & (count - 1)].add(name)
      this.buckets = buckets
    }
    return this.buckets[b]
  }
}
