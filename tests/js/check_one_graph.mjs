// Runs eeopt one-graph exports with onnxruntime-node alone (no eeopt code) and compares them
// with the results Python saved.
//
//   node tests/js/check_one_graph.mjs cases.json
//
// cases.json: [{"model": "program.onnx", "inputs": {name: {"file", "dtype", "shape"}},
//               "logits": {"file", "shape"}, "exit": {"file", "shape"}}, ...]
// (raw little-endian arrays). Prints one JSON line: per case, whether the exits are equal,
// the largest logit difference, and the exits seen.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array,
                 uint8: Uint8Array, bool: Uint8Array };

function load(spec) {
  const bytes = readFileSync(spec.file);
  const Kind = ARRAYS[spec.dtype];
  if (!Kind) throw new Error(`unsupported dtype ${spec.dtype}`);
  const data = new Kind(bytes.buffer, bytes.byteOffset, bytes.byteLength / Kind.BYTES_PER_ELEMENT);
  return new ort.Tensor(spec.dtype, data, spec.shape);
}

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
const sessions = new Map();
for (const c of cases) {
  if (!sessions.has(c.model)) {
    sessions.set(c.model, await ort.InferenceSession.create(c.model, {
      executionProviders: ["cpu"], intraOpNumThreads: 1 }));
  }
  const session = sessions.get(c.model);
  const feeds = {};
  for (const [name, spec] of Object.entries(c.inputs)) feeds[name] = load(spec);
  const res = await session.run(feeds);
  const wantLogits = load({ ...c.logits, dtype: "float32" }).data;
  const wantExit = load({ ...c.exit, dtype: "int64" }).data;
  let maxDiff = 0;
  for (let i = 0; i < wantLogits.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(res.logits.data[i] - wantLogits[i]));
  }
  let exitEqual = res.exit.data.length === wantExit.length && res.logits.data.length === wantLogits.length;
  for (let i = 0; exitEqual && i < wantExit.length; i++) exitEqual = res.exit.data[i] === wantExit[i];
  out.push({ model: c.model, rows: Number(res.exit.dims[0]), exit_equal: exitEqual,
             max_diff: maxDiff, exits: [...new Set(Array.from(res.exit.data, Number))].sort(),
             logits_type: res.logits.type, exit_type: res.exit.type });
}
console.log(JSON.stringify(out));
