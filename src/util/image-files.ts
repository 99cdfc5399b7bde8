/** Expands the CLI's image arguments: files as given, folders to the images inside them (recursively, sorted). */
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';

export const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.gif']);

async function walk(dir: string, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, out);
    else if (IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(p);
  }
}

/**
 * The image files named by `args`: files as given, folders expanded to the files with an image
 * extension inside them (recursively, sorted by name; symbolic links to folders are not
 * followed). Nothing is opened here. An entry that is not a regular file (a FIFO named x.png,
 * say) stays in the list, so that scoring reports it as an InvalidInputError ("not a regular
 * file") instead of skipping it silently, and never opens it.
 */
export async function expandImagePaths(args: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const arg of args) {
    const s = await stat(arg).catch(() => undefined);
    if (s?.isDirectory()) await walk(arg, out);
    else out.push(arg); // a missing file is reported per image, like a corrupt one
  }
  return out;
}
