/**
 * The ONNX protobuf schema (onnx.proto, IR version 13), as TypeScript types plus a field
 * table that drives the generic codec in codec.ts.
 *
 * Conventions:
 * - Optional scalars are present only when the file had them (proto2 presence survives).
 * - Repeated fields are always arrays (empty when absent); tensor payload fields are
 *   typed arrays and present only when the file had them.
 * - int64 that can hold any value (attribute ints, int64_data, model_version) are bigint;
 *   int64 that are sizes or versions are numbers, refused at parse time if not exact.
 * - Every message keeps fields this schema does not know in `unknown` (raw tag + payload),
 *   written back verbatim, so newer files survive a round trip.
 */

export interface Unknown { unknown?: Uint8Array[] }

export interface StringStringEntryProto extends Unknown { key?: string; value?: string }
export interface OperatorSetIdProto extends Unknown { domain?: string; version?: number }

export const enum DataType {
  UNDEFINED = 0, FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
  STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, COMPLEX64 = 14,
  COMPLEX128 = 15, BFLOAT16 = 16, FLOAT8E4M3FN = 17, FLOAT8E4M3FNUZ = 18, FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20, UINT4 = 21, INT4 = 22, FLOAT4E2M1 = 23, FLOAT8E8M0 = 24, UINT2 = 25, INT2 = 26,
}

export const enum AttributeType {
  UNDEFINED = 0, FLOAT = 1, INT = 2, STRING = 3, TENSOR = 4, GRAPH = 5, FLOATS = 6, INTS = 7,
  STRINGS = 8, TENSORS = 9, GRAPHS = 10, SPARSE_TENSOR = 11, SPARSE_TENSORS = 12, TYPE_PROTO = 13,
  TYPE_PROTOS = 14,
}

export const DATA_LOCATION_EXTERNAL = 1;

export interface TensorSegment extends Unknown { begin?: bigint; end?: bigint }

export interface TensorProto extends Unknown {
  dims: number[];
  dataType?: number;
  segment?: TensorSegment;
  floatData?: Float32Array;
  int32Data?: Int32Array;
  stringData: Uint8Array[];
  int64Data?: BigInt64Array;
  name?: string;
  docString?: string;
  rawData?: Uint8Array;
  externalData: StringStringEntryProto[];
  dataLocation?: number;
  doubleData?: Float64Array;
  uint64Data?: BigUint64Array;
  metadataProps: StringStringEntryProto[];
}

export interface SparseTensorProto extends Unknown { values?: TensorProto; indices?: TensorProto; dims: number[] }

export interface TensorShapeDimension extends Unknown { dimValue?: number; dimParam?: string; denotation?: string }
export interface TensorShapeProto extends Unknown { dim: TensorShapeDimension[] }

export interface TypeProtoTensor extends Unknown { elemType?: number; shape?: TensorShapeProto }
export interface TypeProtoSequence extends Unknown { elemType?: TypeProto }
export interface TypeProtoMap extends Unknown { keyType?: number; valueType?: TypeProto }
export interface TypeProtoOptional extends Unknown { elemType?: TypeProto }
export interface TypeProtoOpaque extends Unknown { domain?: string; name?: string }
export interface TypeProto extends Unknown {
  tensorType?: TypeProtoTensor;
  sequenceType?: TypeProtoSequence;
  mapType?: TypeProtoMap;
  optionalType?: TypeProtoOptional;
  sparseTensorType?: TypeProtoTensor;
  opaqueType?: TypeProtoOpaque;
  denotation?: string;
}

export interface ValueInfoProto extends Unknown {
  name?: string; type?: TypeProto; docString?: string; metadataProps: StringStringEntryProto[];
}

export interface AttributeProto extends Unknown {
  name?: string;
  refAttrName?: string;
  docString?: string;
  type?: number;
  f?: number;
  i?: bigint;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparseTensor?: SparseTensorProto;
  tp?: TypeProto;
  floats: number[];
  ints: bigint[];
  strings: Uint8Array[];
  tensors: TensorProto[];
  graphs: GraphProto[];
  sparseTensors: SparseTensorProto[];
  typeProtos: TypeProto[];
}

export interface NodeProto extends Unknown {
  input: string[];
  output: string[];
  name?: string;
  opType?: string;
  domain?: string;
  overload?: string;
  attribute: AttributeProto[];
  docString?: string;
  metadataProps: StringStringEntryProto[];
  /** NodeDeviceConfigurationProto messages, kept as raw bytes (multi-device; not interpreted). */
  deviceConfigurations: Uint8Array[];
}

export interface TensorAnnotation extends Unknown { tensorName?: string; quantParameterTensorNames: StringStringEntryProto[] }

export interface GraphProto extends Unknown {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  sparseInitializer: SparseTensorProto[];
  docString?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  quantizationAnnotation: TensorAnnotation[];
  metadataProps: StringStringEntryProto[];
}

export interface TrainingInfoProto extends Unknown {
  initialization?: GraphProto;
  algorithm?: GraphProto;
  initializationBinding: StringStringEntryProto[];
  updateBinding: StringStringEntryProto[];
}

export interface FunctionProto extends Unknown {
  name?: string;
  input: string[];
  output: string[];
  attribute: string[];
  attributeProto: AttributeProto[];
  node: NodeProto[];
  docString?: string;
  opsetImport: OperatorSetIdProto[];
  domain?: string;
  overload?: string;
  valueInfo: ValueInfoProto[];
  metadataProps: StringStringEntryProto[];
}

export interface ModelProto extends Unknown {
  irVersion?: number;
  opsetImport: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: bigint;
  docString?: string;
  graph?: GraphProto;
  metadataProps: StringStringEntryProto[];
  trainingInfo: TrainingInfoProto[];
  functions: FunctionProto[];
  /** DeviceConfigurationProto messages, kept as raw bytes. */
  configuration: Uint8Array[];
}

// ---- field table -------------------------------------------------------------------

/**
 * Scalar kinds: i64 → bigint, i64n → number (exact), i32/enum → number, u64 → bigint,
 * f32/f64 → number, str → string, bytes → Uint8Array, raw → an embedded message kept as bytes.
 * Packed typed kinds (tensor payloads): pf32, pi32, pi64, pf64, pu64.
 */
export type ScalarKind = 'i64' | 'i64n' | 'i32' | 'u64' | 'f32' | 'f64' | 'str' | 'bytes' | 'raw';
export type PackedKind = 'pf32' | 'pi32' | 'pi64' | 'pf64' | 'pu64';

export interface FieldSpec {
  no: number;
  name: string;
  kind: ScalarKind | PackedKind | MessageName;
  repeated?: boolean;
  /** Emit repeated scalars packed (as onnx.proto declares for tensor payloads). */
  packed?: boolean;
}

export type MessageName =
  | 'ModelProto' | 'GraphProto' | 'NodeProto' | 'AttributeProto' | 'TensorProto' | 'TensorSegment'
  | 'SparseTensorProto' | 'ValueInfoProto' | 'TypeProto' | 'TypeProtoTensor' | 'TypeProtoSequence'
  | 'TypeProtoMap' | 'TypeProtoOptional' | 'TypeProtoOpaque' | 'TensorShapeProto' | 'TensorShapeDimension'
  | 'StringStringEntryProto' | 'OperatorSetIdProto' | 'TensorAnnotation' | 'TrainingInfoProto' | 'FunctionProto';

const r = true;
export const SCHEMA: Record<MessageName, FieldSpec[]> = {
  ModelProto: [
    { no: 1, name: 'irVersion', kind: 'i64n' },
    { no: 8, name: 'opsetImport', kind: 'OperatorSetIdProto', repeated: r },
    { no: 2, name: 'producerName', kind: 'str' },
    { no: 3, name: 'producerVersion', kind: 'str' },
    { no: 4, name: 'domain', kind: 'str' },
    { no: 5, name: 'modelVersion', kind: 'i64' },
    { no: 6, name: 'docString', kind: 'str' },
    { no: 7, name: 'graph', kind: 'GraphProto' },
    { no: 14, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
    { no: 20, name: 'trainingInfo', kind: 'TrainingInfoProto', repeated: r },
    { no: 25, name: 'functions', kind: 'FunctionProto', repeated: r },
    { no: 26, name: 'configuration', kind: 'raw', repeated: r },
  ],
  OperatorSetIdProto: [
    { no: 1, name: 'domain', kind: 'str' },
    { no: 2, name: 'version', kind: 'i64n' },
  ],
  StringStringEntryProto: [
    { no: 1, name: 'key', kind: 'str' },
    { no: 2, name: 'value', kind: 'str' },
  ],
  GraphProto: [
    { no: 1, name: 'node', kind: 'NodeProto', repeated: r },
    { no: 2, name: 'name', kind: 'str' },
    { no: 5, name: 'initializer', kind: 'TensorProto', repeated: r },
    { no: 15, name: 'sparseInitializer', kind: 'SparseTensorProto', repeated: r },
    { no: 10, name: 'docString', kind: 'str' },
    { no: 11, name: 'input', kind: 'ValueInfoProto', repeated: r },
    { no: 12, name: 'output', kind: 'ValueInfoProto', repeated: r },
    { no: 13, name: 'valueInfo', kind: 'ValueInfoProto', repeated: r },
    { no: 14, name: 'quantizationAnnotation', kind: 'TensorAnnotation', repeated: r },
    { no: 16, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
  ],
  NodeProto: [
    { no: 1, name: 'input', kind: 'str', repeated: r },
    { no: 2, name: 'output', kind: 'str', repeated: r },
    { no: 3, name: 'name', kind: 'str' },
    { no: 4, name: 'opType', kind: 'str' },
    { no: 7, name: 'domain', kind: 'str' },
    { no: 8, name: 'overload', kind: 'str' },
    { no: 5, name: 'attribute', kind: 'AttributeProto', repeated: r },
    { no: 6, name: 'docString', kind: 'str' },
    { no: 9, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
    { no: 10, name: 'deviceConfigurations', kind: 'raw', repeated: r },
  ],
  AttributeProto: [
    { no: 1, name: 'name', kind: 'str' },
    { no: 21, name: 'refAttrName', kind: 'str' },
    { no: 13, name: 'docString', kind: 'str' },
    { no: 20, name: 'type', kind: 'i32' },
    { no: 2, name: 'f', kind: 'f32' },
    { no: 3, name: 'i', kind: 'i64' },
    { no: 4, name: 's', kind: 'bytes' },
    { no: 5, name: 't', kind: 'TensorProto' },
    { no: 6, name: 'g', kind: 'GraphProto' },
    { no: 22, name: 'sparseTensor', kind: 'SparseTensorProto' },
    { no: 14, name: 'tp', kind: 'TypeProto' },
    { no: 7, name: 'floats', kind: 'f32', repeated: r },
    { no: 8, name: 'ints', kind: 'i64', repeated: r },
    { no: 9, name: 'strings', kind: 'bytes', repeated: r },
    { no: 10, name: 'tensors', kind: 'TensorProto', repeated: r },
    { no: 11, name: 'graphs', kind: 'GraphProto', repeated: r },
    { no: 23, name: 'sparseTensors', kind: 'SparseTensorProto', repeated: r },
    { no: 15, name: 'typeProtos', kind: 'TypeProto', repeated: r },
  ],
  TensorProto: [
    { no: 1, name: 'dims', kind: 'i64n', repeated: r },
    { no: 2, name: 'dataType', kind: 'i32' },
    { no: 3, name: 'segment', kind: 'TensorSegment' },
    { no: 4, name: 'floatData', kind: 'pf32', packed: r },
    { no: 5, name: 'int32Data', kind: 'pi32', packed: r },
    { no: 6, name: 'stringData', kind: 'bytes', repeated: r },
    { no: 7, name: 'int64Data', kind: 'pi64', packed: r },
    { no: 8, name: 'name', kind: 'str' },
    { no: 12, name: 'docString', kind: 'str' },
    { no: 9, name: 'rawData', kind: 'bytes' },
    { no: 13, name: 'externalData', kind: 'StringStringEntryProto', repeated: r },
    { no: 14, name: 'dataLocation', kind: 'i32' },
    { no: 10, name: 'doubleData', kind: 'pf64', packed: r },
    { no: 11, name: 'uint64Data', kind: 'pu64', packed: r },
    { no: 16, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
  ],
  TensorSegment: [
    { no: 1, name: 'begin', kind: 'i64' },
    { no: 2, name: 'end', kind: 'i64' },
  ],
  SparseTensorProto: [
    { no: 1, name: 'values', kind: 'TensorProto' },
    { no: 2, name: 'indices', kind: 'TensorProto' },
    { no: 3, name: 'dims', kind: 'i64n', repeated: r },
  ],
  ValueInfoProto: [
    { no: 1, name: 'name', kind: 'str' },
    { no: 2, name: 'type', kind: 'TypeProto' },
    { no: 3, name: 'docString', kind: 'str' },
    { no: 4, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
  ],
  TypeProto: [
    { no: 1, name: 'tensorType', kind: 'TypeProtoTensor' },
    { no: 4, name: 'sequenceType', kind: 'TypeProtoSequence' },
    { no: 5, name: 'mapType', kind: 'TypeProtoMap' },
    { no: 9, name: 'optionalType', kind: 'TypeProtoOptional' },
    { no: 8, name: 'sparseTensorType', kind: 'TypeProtoTensor' },
    { no: 7, name: 'opaqueType', kind: 'TypeProtoOpaque' },
    { no: 6, name: 'denotation', kind: 'str' },
  ],
  TypeProtoTensor: [
    { no: 1, name: 'elemType', kind: 'i32' },
    { no: 2, name: 'shape', kind: 'TensorShapeProto' },
  ],
  TypeProtoSequence: [{ no: 1, name: 'elemType', kind: 'TypeProto' }],
  TypeProtoMap: [
    { no: 1, name: 'keyType', kind: 'i32' },
    { no: 2, name: 'valueType', kind: 'TypeProto' },
  ],
  TypeProtoOptional: [{ no: 1, name: 'elemType', kind: 'TypeProto' }],
  TypeProtoOpaque: [
    { no: 1, name: 'domain', kind: 'str' },
    { no: 2, name: 'name', kind: 'str' },
  ],
  TensorShapeProto: [{ no: 1, name: 'dim', kind: 'TensorShapeDimension', repeated: r }],
  TensorShapeDimension: [
    { no: 1, name: 'dimValue', kind: 'i64n' },
    { no: 2, name: 'dimParam', kind: 'str' },
    { no: 3, name: 'denotation', kind: 'str' },
  ],
  TensorAnnotation: [
    { no: 1, name: 'tensorName', kind: 'str' },
    { no: 2, name: 'quantParameterTensorNames', kind: 'StringStringEntryProto', repeated: r },
  ],
  TrainingInfoProto: [
    { no: 1, name: 'initialization', kind: 'GraphProto' },
    { no: 2, name: 'algorithm', kind: 'GraphProto' },
    { no: 3, name: 'initializationBinding', kind: 'StringStringEntryProto', repeated: r },
    { no: 4, name: 'updateBinding', kind: 'StringStringEntryProto', repeated: r },
  ],
  FunctionProto: [
    { no: 1, name: 'name', kind: 'str' },
    { no: 4, name: 'input', kind: 'str', repeated: r },
    { no: 5, name: 'output', kind: 'str', repeated: r },
    { no: 6, name: 'attribute', kind: 'str', repeated: r },
    { no: 11, name: 'attributeProto', kind: 'AttributeProto', repeated: r },
    { no: 7, name: 'node', kind: 'NodeProto', repeated: r },
    { no: 8, name: 'docString', kind: 'str' },
    { no: 9, name: 'opsetImport', kind: 'OperatorSetIdProto', repeated: r },
    { no: 10, name: 'domain', kind: 'str' },
    { no: 13, name: 'overload', kind: 'str' },
    { no: 12, name: 'valueInfo', kind: 'ValueInfoProto', repeated: r },
    { no: 14, name: 'metadataProps', kind: 'StringStringEntryProto', repeated: r },
  ],
};

// ---- constructors with every repeated field present ----------------------------------

export function newTensor(p: Partial<TensorProto> = {}): TensorProto {
  return { dims: [], stringData: [], externalData: [], metadataProps: [], ...p };
}
export function newNode(p: Partial<NodeProto> & { opType: string }): NodeProto {
  return { input: [], output: [], attribute: [], metadataProps: [], deviceConfigurations: [], ...p };
}
export function newAttribute(p: Partial<AttributeProto> & { name: string }): AttributeProto {
  return { floats: [], ints: [], strings: [], tensors: [], graphs: [], sparseTensors: [], typeProtos: [], ...p };
}
export function newGraph(p: Partial<GraphProto> = {}): GraphProto {
  return {
    node: [], initializer: [], sparseInitializer: [], input: [], output: [], valueInfo: [],
    quantizationAnnotation: [], metadataProps: [], ...p,
  };
}
export function newValueInfo(p: Partial<ValueInfoProto> = {}): ValueInfoProto {
  return { metadataProps: [], ...p };
}
export function newModel(p: Partial<ModelProto> = {}): ModelProto {
  return { opsetImport: [], metadataProps: [], trainingInfo: [], functions: [], configuration: [], ...p };
}
