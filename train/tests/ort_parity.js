// Used by test_export.py when node + onnxruntime-node are present:
//   node train/tests/ort_parity.js WORKDIR [ONNX]
// Runs WORKDIR/unet.onnx on parity_x.npy / parity_t.npy with onnxruntime-node and prints
// {"max_abs_diff": d, "shape": [...]} against parity_eps.npy (the PyTorch EMA output).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(require.resolve('onnxruntime-node', { paths: [process.cwd(), path.join(__dirname, '..', '..')] }));

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not .npy`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (/'fortran_order':\s*True/.test(header)) throw new Error('fortran order');
  const off = hstart + hlen;
  const data = buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length);
  if (descr === '<f4') return { shape, data: new Float32Array(data), type: 'float32' };
  if (descr === '<i8') return { shape, data: new BigInt64Array(data), type: 'int64' };
  throw new Error(`${file}: unsupported dtype ${descr}`);
}

(async () => {
  const dir = process.argv[2];
  const model = process.argv[3] || path.join(dir, 'unet.onnx');
  const x = readNpy(path.join(dir, 'parity_x.npy'));
  const t = readNpy(path.join(dir, 'parity_t.npy'));
  const eps = readNpy(path.join(dir, 'parity_eps.npy'));
  const sess = await ort.InferenceSession.create(model);
  const out = await sess.run({ x: new ort.Tensor('float32', x.data, x.shape), t: new ort.Tensor('int64', t.data, t.shape) });
  const got = out.eps;
  let d = 0;
  for (let i = 0; i < eps.data.length; i++) d = Math.max(d, Math.abs(got.data[i] - eps.data[i]));
  // Also run a single-sample batch (dynamic batch axis).
  const per = x.data.length / x.shape[0];
  const one = await sess.run({
    x: new ort.Tensor('float32', x.data.slice(per, 2 * per), [1, ...x.shape.slice(1)]),
    t: new ort.Tensor('int64', t.data.slice(1, 2), [1]),
  });
  let d1 = 0;
  for (let i = 0; i < per; i++) d1 = Math.max(d1, Math.abs(one.eps.data[i] - eps.data[per + i]));
  console.log(JSON.stringify({ max_abs_diff: Math.max(d, d1), shape: got.dims, inputs: sess.inputNames, outputs: sess.outputNames }));
})().catch((e) => { console.error(e); process.exit(1); });
