/**
 * Hand-encoded ONNX model bytes for one Gemm node `Y = op(A)·op(B)` with symbolic
 * dims, so the linalg engine can run products in ONNX Runtime without depending on
 * the project's ONNX reader/writer. Gemm (not MatMul) because it takes transA/transB
 * natively: no transposed copies of large operands.
 *
 * Field numbers (onnx.proto): ModelProto ir_version=1, opset_import=8, graph=7;
 * OperatorSetIdProto domain=1, version=2; GraphProto node=1, name=2, input=11,
 * output=12; NodeProto input=1, output=2, op_type=4, attribute=5; AttributeProto
 * name=1, i=3, type=20 (INT=2); ValueInfoProto name=1, type=2; TypeProto
 * tensor_type=1; Tensor elem_type=1, shape=2; TensorShapeProto dim=1; Dimension dim_param=2.
 */

/** ONNX TensorProto.DataType codes used here. */
export const ONNX_FLOAT = 1;
export const ONNX_DOUBLE = 11;

export interface GemmModelSpec {
  elemType: typeof ONNX_FLOAT | typeof ONNX_DOUBLE;
  transA: boolean;
  transB: boolean;
}

export function encodeGemmModel(spec: GemmModelSpec): Uint8Array {
  const [aDims, bDims] = [spec.transA ? ['K', 'M'] : ['M', 'K'], spec.transB ? ['N', 'K'] : ['K', 'N']];
  const node = concat(
    strField(1, 'A'),
    strField(1, 'B'),
    strField(2, 'Y'),
    strField(4, 'Gemm'),
    msgField(5, intAttribute('transA', spec.transA ? 1 : 0)),
    msgField(5, intAttribute('transB', spec.transB ? 1 : 0)),
  );
  const graph = concat(
    msgField(1, node),
    strField(2, 'linalg_gemm'),
    msgField(11, valueInfo('A', spec.elemType, aDims)),
    msgField(11, valueInfo('B', spec.elemType, bDims)),
    msgField(12, valueInfo('Y', spec.elemType, ['M', 'N'])),
  );
  const opset = concat(strField(1, ''), varintField(2, 13));
  return concat(varintField(1, 8), msgField(8, opset), msgField(7, graph));
}

function intAttribute(name: string, value: number): Uint8Array {
  return concat(strField(1, name), varintField(3, value), varintField(20, 2));
}

function valueInfo(name: string, elemType: number, dims: string[]): Uint8Array {
  const shape = concat(...dims.map((d) => msgField(1, strField(2, d))));
  const tensorType = concat(varintField(1, elemType), msgField(2, shape));
  return concat(strField(1, name), msgField(2, msgField(1, tensorType)));
}

// --- minimal protobuf wire encoding (varint = type 0, length-delimited = type 2) ---

function varint(v: number): number[] {
  const out: number[] = [];
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function varintField(field: number, v: number): Uint8Array {
  return Uint8Array.from([...varint((field << 3) | 0), ...varint(v)]);
}

function msgField(field: number, body: Uint8Array): Uint8Array {
  return concat(Uint8Array.from([...varint((field << 3) | 2), ...varint(body.length)]), body);
}

function strField(field: number, s: string): Uint8Array {
  return msgField(field, new TextEncoder().encode(s));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Session options for a Gemm session: sequential, one inter-op thread, spinning off by
 * default (the caller waits between products; spinning threads would steal its core).
 * Plain data, so it also crosses into the worker of ort-gemm-sync.ts.
 */
export function gemmSessionOptions(threads: number, spinning = false) {
  const spin = spinning ? '1' : '0';
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential' as const,
    graphOptimizationLevel: 'all' as const,
    extra: { session: { intra_op: { allow_spinning: spin }, inter_op: { allow_spinning: spin } } },
  };
}
