/**
 * Checks that a path is a regular file before anything opens it. Opening a FIFO (named pipe)
 * for reading blocks until a writer appears, and it blocks inside a libuv pool thread (sharp,
 * fs.readFile): one such path hangs its call forever, and four of them (the pool's default size)
 * hang every later fs call of the process. stat() never opens the path, so it cannot block so.
 */
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';

/** What a path that is not a regular file is, for messages: 'a directory', 'a FIFO (named pipe)', ... */
export function fileKind(s: Stats): string {
  if (s.isFile()) return 'a regular file';
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO (named pipe)';
  if (s.isSocket()) return 'a socket';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  return 'not a file';
}

/** The outcome of {@link checkRegularFile}: the file's size, or why it cannot be read as a file. */
export type RegularFileCheck = { ok: true; size: number } | { ok: false; reason: string; cause?: unknown };

/**
 * Whether `path` (symlinks followed) is a regular file, found without opening it. `reason`
 * completes a sentence that starts with the path: "does not exist", "is not a regular file
 * (it is a FIFO (named pipe))", ...
 */
export async function checkRegularFile(path: string): Promise<RegularFileCheck> {
  let s: Stats;
  try {
    s = await stat(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    return { ok: false, reason: code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(cause)})`, cause };
  }
  if (!s.isFile()) return { ok: false, reason: `is not a regular file (it is ${fileKind(s)})` };
  return { ok: true, size: s.size };
}
