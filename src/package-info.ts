import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The package root, found by walking up to invad's package.json. The same code
 * runs from src/ (ts-jest) and from dist/src/ (compiled), so a fixed relative
 * path would be wrong in one of them.
 */
export function packageRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string };
      if (pkg.name === 'invad') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`invad's package.json not found above ${from}`);
    dir = parent;
  }
}

let cachedVersion: string | undefined;
export function packageVersion(): string {
  cachedVersion ??= (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return cachedVersion;
}
