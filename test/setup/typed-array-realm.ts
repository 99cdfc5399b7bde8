// Jest runs each test file in its own vm context, but onnxruntime-node creates
// its output arrays in the main realm, so its `instanceof Float32Array` checks
// fail on them ("A float32 tensor's data must be type of function Float32Array()").
// Make this realm's typed-array constructors accept same-kind arrays from any
// realm. Product code (plain Node, worker threads) does not need this.
for (const C of [Float32Array, Float64Array, Int8Array, Uint8Array, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array]) {
  // The constructors can be shared by several test files of one jest worker.
  if (Object.prototype.hasOwnProperty.call(C, Symbol.hasInstance)) continue;
  const tag = `[object ${C.name}]`;
  Object.defineProperty(C, Symbol.hasInstance, {
    value: (v: unknown) => ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === tag,
  });
}
