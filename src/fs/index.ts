export { FileSystem, Stat, StatFs, S_IFDIR, S_IFREG, S_IFMT, MAX_FILE_SIZE } from './filesystem'
