// Jest runs each test file in its own vm context, but onnxruntime-node creates
// its output arrays in the main realm, so its `instanceof Float32Array` checks
// fail on them ("A float32 tensor's data must be type of function Float32Array()").
// Make this realm's typed-array constructors accept same-kind arrays from any
// realm. Product code (plain Node, worker threads) does not need this.
// Only the output types invad's models produce: patching Uint8Array would make
// Buffer.isBuffer() true for any Uint8Array and break protobufjs decoding.
for (const C of [Float32Array, Float64Array, Int32Array, BigInt64Array]) {
  // The constructors can be shared by several test files of one jest worker.
  if (Object.prototype.hasOwnProperty.call(C, Symbol.hasInstance)) continue;
  const tag = `[object ${C.name}]`;
  Object.defineProperty(C, Symbol.hasInstance, {
    value: (v: unknown) => ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === tag,
  });
}
