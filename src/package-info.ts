import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../binding';

/** The package root, found by walking up to invad's package.json (works from src/ and dist/). */
export { packageRoot } from '../binding';

let cachedVersion: string | undefined;
export function packageVersion(): string {
  cachedVersion ??= (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return cachedVersion;
}
