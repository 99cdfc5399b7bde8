/**
 * The API key check. A client sends the key as `Authorization: Bearer <key>` or as
 * `X-API-Key: <key>`. Both sides are hashed with SHA-256 and the digests compared with
 * crypto.timingSafeEqual: equal-length inputs whatever the lengths of the keys, so the time
 * taken tells an attacker neither how long the key is nor how many leading bytes matched.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The key a request carries, or undefined. */
export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1];
  }
  const key = headers['x-api-key'];
  return typeof key === 'string' ? key : undefined;
}

/** A checker for one key: true when a request's headers carry exactly that key. */
export function apiKeyChecker(key: string): (headers: IncomingHttpHeaders) => boolean {
  const expected = digest(key);
  return (headers) => {
    const given = presentedKey(headers);
    // Hash even when nothing was sent, so a missing key costs the same as a wrong one.
    const ok = timingSafeEqual(digest(given ?? ''), expected);
    return ok && given !== undefined;
  };
}
