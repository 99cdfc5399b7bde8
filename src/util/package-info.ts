import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The package root: the nearest folder above `start` whose package.json is named
 * "invad". Works from src/ (ts-jest) and from dist/src/ (compiled).
 */
export function packageRoot(start: string = __dirname): string {
  let dir = path.resolve(start);
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    try {
      if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'invad') return dir;
    } catch {
      // no or unreadable package.json here: keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json named "invad" above ${start}`);
    dir = parent;
  }
}

let cachedVersion: string | undefined;
export function packageVersion(): string {
  cachedVersion ??= (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return cachedVersion;
}
