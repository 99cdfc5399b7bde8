/** Argument predicates and the one error they raise, so messages read the same everywhere. */
import { InvalidArgumentError } from './errors';

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `array of length ${v.length}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${String(v)} of type ${typeof v}`;
  if (typeof v === 'string') return `"${v.length > 40 ? v.slice(0, 40) + '...' : v}" of type string`;
  return typeof v;
}

/** "Expected positive integer for options.steps but received -1 of type number" */
export function invalidArgument(name: string, expected: string, actual: unknown): InvalidArgumentError {
  return new InvalidArgumentError(name, `Expected ${expected} for ${name} but received ${describe(actual)}`);
}

export function intInRange(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidArgument(name, `an integer from ${min} to ${max}`, v);
  }
  return v;
}

export function numberInRange(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw invalidArgument(name, `a number from ${min} to ${max}`, v);
  }
  return v;
}

/**
 * A non-empty path string without NUL bytes. Node's fs refuses NUL, but native code (sharp,
 * libvips, ONNX Runtime) reads the path as a C string and would silently stop at the first
 * NUL: '/a/normal.png\0/x.jpg' would open /a/normal.png.
 */
export function pathString(name: string, v: unknown, expected = 'a file path'): string {
  if (typeof v !== 'string' || v.length === 0) throw invalidArgument(name, expected, v);
  if (v.includes('\0')) {
    throw new InvalidArgumentError(
      name,
      `Expected ${expected} without NUL bytes for ${name} but received ${JSON.stringify(v.length > 80 ? v.slice(0, 80) + '...' : v)}`,
    );
  }
  return v;
}

export function plainObject(name: string, v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalidArgument(name, 'an options object', v);
  return v as Record<string, unknown>;
}

export function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !allowed.includes(v as T)) throw invalidArgument(name, `one of ${allowed.join(', ')}`, v);
  return v as T;
}
