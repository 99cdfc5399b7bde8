/** Minimal .npy (format 1.0) reading and writing for float32 and int64 C-order arrays. */
import { readFile, writeFile } from 'node:fs/promises';

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);
type Dtype = '<f4' | '<i8';

export interface NpyArray {
  dtype: Dtype;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

export function encodeNpy(data: Float32Array | BigInt64Array, shape: readonly number[]): Buffer {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`npy: shape [${shape.join(', ')}] holds ${count} values, data has ${data.length}`);
  const descr: Dtype = data instanceof Float32Array ? '<f4' : '<i8';
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // Magic, version and length take 10 bytes; pad so the data starts on a 64-byte boundary.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const head = Buffer.alloc(10);
  MAGIC.copy(head, 0);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export function decodeNpy(buf: Buffer, name = 'array'): NpyArray {
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new Error(`${name} is not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.subarray(start, start + headerLen).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr !== '<f4' && descr !== '<i8') throw new Error(`${name}: dtype ${descr} is not supported (float32 or int64 only)`);
  if (fortran !== 'False') throw new Error(`${name}: Fortran-order arrays are not supported`);
  const shape = (shapeText ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  const bytes = buf.subarray(offset);
  const width = descr === '<f4' ? 4 : 8;
  if (bytes.length !== count * width) throw new Error(`${name}: expected ${count * width} data bytes for shape [${shape.join(',')}], found ${bytes.length}`);
  // Copy into a fresh, aligned buffer.
  const copy = new Uint8Array(bytes).buffer;
  return { dtype: descr, shape, data: descr === '<f4' ? new Float32Array(copy) : new BigInt64Array(copy) };
}

export async function writeNpy(path: string, data: Float32Array | BigInt64Array, shape: readonly number[]): Promise<void> {
  await writeFile(path, encodeNpy(data, shape));
}

export async function readNpy(path: string): Promise<NpyArray> {
  return decodeNpy(await readFile(path), path);
}
