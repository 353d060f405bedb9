export { FileSystem, Stat, StatFs, TimeSpec, Timespec, S_IFDIR, S_IFREG, S_IFLNK, S_IFMT, MAX_FILE_SIZE, RENAME_NOREPLACE, RENAME_EXCHANGE } from './filesystem'
