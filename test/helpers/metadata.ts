/** OUT's bytes without the run's own metadata (onnx-lr.command, .policy, …): for comparing what two runs computed. */
import { readFileSync } from 'node:fs';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';

export function withoutRunMetadata(file: string, keys: RegExp = /^onnx-lr\./): Buffer {
  const m = decodeModel(new Uint8Array(readFileSync(file)));
  return Buffer.from(encodeModel({ ...m, metadataProps: m.metadataProps.filter((e) => !keys.test(e.key ?? '')) }));
}
