/**
 * Values the targets build arguments from: edge-case numbers, values of every JS type,
 * buffers that can be resized or detached, and getters that run code at the worst moment.
 */
import type { Rng } from './rng';

/** Thrown by the fuzzer's own getters and proxies: a caller's exception, which must propagate. */
export class FuzzInjectedError extends Error {
  override readonly name = 'FuzzInjectedError';
}

export const EDGE_NUMBERS: readonly number[] = [
  0,
  -0,
  1,
  -1,
  2,
  3,
  4,
  7,
  8,
  15,
  16,
  17,
  255,
  256,
  1023,
  1024,
  4096,
  16383,
  16384,
  65535,
  65536,
  2 ** 20,
  2 ** 24,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 40,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 64,
  -(2 ** 31),
  -(2 ** 53),
  0.5,
  1.5,
  -0.5,
  1e-7,
  1e-300,
  5e-324,
  1e308,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  NaN,
  Infinity,
  -Infinity,
];

export function edgeNumber(rng: Rng): number {
  return rng.pick(EDGE_NUMBERS);
}

/** A value of any type, for arguments that expect something else. */
export function junk(rng: Rng): unknown {
  const k = rng.int(0, 19);
  switch (k) {
    case 0:
      return undefined;
    case 1:
      return null;
    case 2:
      return edgeNumber(rng);
    case 3:
      return rng.pick(['', '1', '0x10', 'abc', ' 3 ', 'NaN', '\u0000', 'x'.repeat(rng.int(1, 5000))]);
    case 4:
      return rng.chance(0.5);
    case 5:
      return Symbol('fuzz');
    case 6:
      return BigInt(rng.int(-2, 2 ** 31));
    case 7:
      return {};
    case 8:
      return [];
    case 9:
      return [1, 2, 3];
    case 10:
      return () => 1;
    case 11:
      return Object.create(null) as object;
    case 12:
      return new Proxy(
        {},
        {
          get: () => {
            throw new FuzzInjectedError('proxy get');
          },
          has: () => {
            throw new FuzzInjectedError('proxy has');
          },
          ownKeys: () => {
            throw new FuzzInjectedError('proxy ownKeys');
          },
        },
      );
    case 13:
      return new Date(0);
    case 14:
      return new Map();
    case 15:
      return new ArrayBuffer(rng.int(0, 64));
    case 16:
      return new Uint8Array(rng.int(0, 64));
    case 17:
      return new Float64Array(rng.int(0, 16));
    case 18:
      return {
        valueOf: () => {
          throw new FuzzInjectedError('valueOf');
        },
        toString: () => {
          throw new FuzzInjectedError('toString');
        },
      };
    default:
      return new DataView(new ArrayBuffer(8));
  }
}

type ResizableCtor = new (length: number, options: { maxByteLength: number }) => ArrayBuffer;
interface Resizable {
  resize(byteLength: number): void;
  readonly maxByteLength: number;
}

/** A resizable ArrayBuffer of `byteLength` bytes that may grow to `maxByteLength`. */
export function resizableBuffer(byteLength: number, maxByteLength = byteLength): ArrayBuffer {
  return new (ArrayBuffer as unknown as ResizableCtor)(byteLength, { maxByteLength });
}

/** Resizes a resizable buffer (a no-op for fixed ones and detached ones). */
export function resize(ab: ArrayBufferLike, byteLength: number): void {
  const r = ab as unknown as Partial<Resizable>;
  if (typeof r.resize !== 'function' || (r.maxByteLength ?? 0) < byteLength) return;
  try {
    r.resize(byteLength);
  } catch {
    // detached already
  }
}

/** Detaches an ArrayBuffer, as transferring it to a worker does. */
export function detach(ab: ArrayBufferLike): void {
  if (!(ab instanceof ArrayBuffer)) return;
  try {
    structuredClone(ab, { transfer: [ab] });
  } catch {
    // detached already, or not transferable
  }
}

/** What an attack does to a buffer: the ways a caller can pull memory away under a call. */
export type BufferAttack = 'resize-0' | 'shrink' | 'grow' | 'detach';
export const BUFFER_ATTACKS: readonly BufferAttack[] = ['resize-0', 'shrink', 'grow', 'detach'];

export function attack(ab: ArrayBufferLike, kind: BufferAttack): void {
  if (kind === 'detach') return detach(ab);
  const now = ab.byteLength;
  const size = kind === 'resize-0' ? 0 : kind === 'shrink' ? Math.floor(now / 2) : Math.max(now * 2, 8);
  resize(ab, size);
}

type TypedCtor<T> = { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): T; readonly BYTES_PER_ELEMENT: number };

/**
 * A copy of `src` on a resizable buffer: a fixed-length view, or a length-tracking one
 * (its length follows the buffer's). The buffer may grow to twice its size.
 */
export function onResizable<T extends Float32Array | Uint8Array>(src: T, ctor: TypedCtor<T>, lengthTracking: boolean): T {
  const bytes = src.length * ctor.BYTES_PER_ELEMENT;
  const ab = resizableBuffer(bytes, Math.max(8, bytes * 2));
  const view = lengthTracking ? new ctor(ab) : new ctor(ab, 0, src.length);
  copyInto(view, src);
  return view;
}

/** view.set(src), where src may have been detached or shrunk by an earlier mutation. */
function copyInto(view: Float32Array | Uint8Array, src: ArrayLike<number>): void {
  try {
    (view as unknown as { set(a: ArrayLike<number>): void }).set(src);
  } catch {
    // src has no bytes left: the copy stays zero
  }
}

/**
 * A shallow copy that keeps getters as getters (a spread would run them, and a getter that
 * throws or detaches a buffer would fire inside the fuzzer instead of inside the call).
 */
export function cloneObject(obj: unknown): Record<string, unknown> {
  if (typeof obj !== 'object' || obj === null) return {};
  try {
    return Object.defineProperties({}, Object.getOwnPropertyDescriptors(obj)) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** A copy of `src` on a SharedArrayBuffer. */
export function onShared<T extends Float32Array | Uint8Array>(src: T, ctor: TypedCtor<T>): T {
  const view = new ctor(new SharedArrayBuffer(src.length * ctor.BYTES_PER_ELEMENT));
  copyInto(view, src);
  return view;
}

/** An object with `value` behind a getter that first runs `effect` (say, resizing a buffer). */
export function getterOf<T>(value: T, effect: () => void): { readonly value: T } {
  return {
    get value() {
      effect();
      return value;
    },
  };
}

/** Replaces `obj[key]` by a getter that runs `effect` and then returns the old value. */
export function trapProperty(obj: Record<string, unknown>, key: string, effect: () => void): void {
  // Keep an earlier getter (reading it here would run it in the fuzzer instead of in the call).
  const old = Object.getOwnPropertyDescriptor(obj, key);
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get(): unknown {
      effect();
      return old?.get ? (old.get.call(obj) as unknown) : (old?.value as unknown);
    },
  });
}

/** A short description of any value, for notes: never throws (junk values may throw on String()). */
export function show(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 20 ? `${v.slice(0, 20)}...` : v);
  if (v === null || v === undefined || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v;
  if (Array.isArray(v)) return `array(${v.length})`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${v.byteLength} bytes)`;
  return 'object';
}

/** A fresh copy of a Float32Array argument, or zeros when an earlier mutation took its bytes away. */
export function freshFloats(v: unknown, fallbackLength = 8): Float32Array {
  if (!(v instanceof Float32Array)) return new Float32Array(fallbackLength);
  try {
    return new Float32Array(v);
  } catch {
    return new Float32Array(fallbackLength);
  }
}

/** obj[key] = value, even where an earlier mutation left a getter (an assignment would throw). */
export function setField(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}
