/** Test items of a dataset in the MVTec AD layout: test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png. */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import { InvalidArgumentError, InvalidInputError } from '../util/errors';
import { IMAGE_EXTENSIONS } from '../util/image-files';

export interface TestItem {
  file: string;
  /** 'good' or the defect type */
  label: string;
  anomalous: boolean;
  /** ground-truth mask path; null for good images (and for defects without one) */
  maskPath: string | null;
}

async function imagesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => IMAGE_EXTENSIONS.has(extname(n).toLowerCase())).sort();
  return names.map((n) => join(dir, n));
}

export async function loadTestSet(root: string): Promise<TestItem[]> {
  const test = join(root, 'test');
  if (!existsSync(test))
    throw new InvalidArgumentError('dataset', `${root} has no test/ folder (expected the MVTec AD layout: test/good, test/<defect>, ground_truth/<defect>)`);
  return listLabelled(root, test);
}

/**
 * A labelled image set: `dir/good` and one folder per defect type, as MVTec AD's test/ folder;
 * an MVTec AD dataset root is read from its test/ folder.
 */
export async function loadLabelledImages(dir: string): Promise<{ normal: string[]; anomalous: string[] }> {
  const test = existsSync(join(dir, 'test')) ? join(dir, 'test') : dir;
  if (!existsSync(test)) throw new InvalidArgumentError('validation', `${dir} does not exist`);
  const items = await listLabelled(dir, test);
  return { normal: items.filter((i) => !i.anomalous).map((i) => i.file), anomalous: items.filter((i) => i.anomalous).map((i) => i.file) };
}

async function listLabelled(root: string, test: string): Promise<TestItem[]> {
  const types = (await readdir(test, { withFileTypes: true }))
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  if (!types.includes('good')) throw new InvalidArgumentError('dataset', `${test} has no good/ folder`);
  const items: TestItem[] = [];
  for (const label of types) {
    for (const file of await imagesIn(join(test, label))) {
      const mask = join(root, 'ground_truth', label, `${basename(file, extname(file))}_mask.png`);
      items.push({ file, label, anomalous: label !== 'good', maskPath: label !== 'good' && existsSync(mask) ? mask : null });
    }
  }
  return items;
}

/** A 0/1 mask of width x height; all zeros without a mask file. Masks of another size are resized (nearest). */
export async function loadMask(item: TestItem, width: number, height: number): Promise<Uint8Array> {
  if (!item.maskPath) return new Uint8Array(width * height);
  try {
    const data = await sharp(item.maskPath).greyscale().resize(width, height, { fit: 'fill', kernel: 'nearest' }).raw().toBuffer();
    const mask = new Uint8Array(width * height);
    for (let i = 0; i < mask.length; i++) mask[i] = data[i] > 127 ? 1 : 0;
    return mask;
  } catch (cause) {
    throw new InvalidInputError(item.maskPath, `cannot read mask ${item.maskPath}: ${(cause as Error).message}`, { cause });
  }
}
