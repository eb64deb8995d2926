/**
 * Generic, schema-driven protobuf codec for ONNX messages. Decoding keeps byte payloads as
 * views into the input (no copy) and collects unknown fields verbatim; encoding writes
 * fields in field-number order, then the unknown fields, and references large payloads
 * instead of copying them until the final join.
 */
import { LrError } from '../errors.js';
import { SCHEMA, type FieldSpec, type MessageName, type ModelProto } from './schema.js';
import { Reader, Writer, concatParts, WT_I32, WT_I64, WT_LEN, WT_VARINT } from './wire.js';

const MAX_DEPTH = 100;

interface MessageInfo { byNo: Map<number, FieldSpec>; ordered: FieldSpec[] }
const INFO = new Map<MessageName, MessageInfo>(
  (Object.keys(SCHEMA) as MessageName[]).map((m) => {
    const ordered = [...SCHEMA[m]].sort((a, b) => a.no - b.no);
    return [m, { byNo: new Map(ordered.map((f) => [f.no, f])), ordered }];
  }),
);

const isMessageKind = (k: string): k is MessageName => k in SCHEMA;

function expectedWireType(kind: FieldSpec['kind']): number {
  switch (kind) {
    case 'i64': case 'i64n': case 'i32': case 'u64': return WT_VARINT;
    case 'f32': case 'pf32': return WT_I32;
    case 'f64': case 'pf64': return WT_I64;
    case 'pi32': case 'pi64': case 'pu64': return WT_VARINT;
    default: return WT_LEN;
  }
}

// ignoreBOM keeps a leading U+FEFF in a string instead of stripping it (lossless).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8enc = new TextEncoder();

type Obj = Record<string, unknown>;

function newObject(m: MessageName): Obj {
  const o: Obj = {};
  for (const f of SCHEMA[m]) if (f.repeated && !f.packed) o[f.name] = [];
  return o;
}

function readScalar(rd: Reader, kind: FieldSpec['kind'], name: string): unknown {
  switch (kind) {
    case 'i64': case 'pi64': return rd.int64();
    case 'u64': case 'pu64': return rd.uint64();
    case 'i64n': return rd.int64Number(name);
    case 'i32': case 'pi32': return rd.int32();
    case 'f32': case 'pf32': return rd.float();
    case 'f64': case 'pf64': return rd.double();
    default: throw new Error(`not a scalar kind: ${kind}`);
  }
}

/** Scalar element size in bytes for a fixed-width packed payload, or 0 for varints. */
function fixedWidth(kind: FieldSpec['kind']): number {
  return kind === 'f32' || kind === 'pf32' ? 4 : kind === 'f64' || kind === 'pf64' ? 8 : 0;
}

function typedFrom(kind: FieldSpec['kind'], values: unknown[]): unknown {
  switch (kind) {
    case 'pf32': return Float32Array.from(values as number[]);
    case 'pi32': return Int32Array.from(values as number[]);
    case 'pi64': return BigInt64Array.from(values as bigint[]);
    case 'pf64': return Float64Array.from(values as number[]);
    case 'pu64': return BigUint64Array.from(values as bigint[]);
    default: return values;
  }
}

function decodeMessage(rd: Reader, m: MessageName, end: number, depth: number): Obj {
  if (depth > MAX_DEPTH) rd.fail(`messages nested deeper than ${MAX_DEPTH}`);
  const info = INFO.get(m)!;
  const obj = newObject(m);
  const pending = new Map<string, unknown[]>(); // packed-kind values, joined at the end
  let unknown: Uint8Array[] | undefined;
  while (rd.pos < end) {
    const start = rd.pos;
    const tag = rd.uint32();
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 0) rd.fail('field number 0');
    const f = info.byNo.get(no);
    const ewt = f ? expectedWireType(f.kind) : -1;
    const packedPayload = f && (f.repeated || f.packed) && wt === WT_LEN && ewt !== WT_LEN;
    if (!f || (wt !== ewt && !packedPayload)) {
      rd.skip(wt, no);
      (unknown ??= []).push(rd.buf.subarray(start, rd.pos));
      continue;
    }
    const kind = f.kind;
    let value: unknown;
    if (isMessageKind(kind)) {
      const len = rd.uint32();
      if (len > end - rd.pos) rd.fail(`${m}.${f.name} runs past the end`);
      const subEnd = rd.pos + len;
      value = decodeMessage(rd, kind, subEnd, depth + 1);
      rd.pos = subEnd;
    } else if (kind === 'str') {
      const b = rd.bytes();
      try { value = utf8.decode(b); } catch { rd.fail(`${m}.${f.name} is not valid UTF-8`); }
    } else if (kind === 'bytes' || kind === 'raw') {
      value = rd.bytes();
    } else if (packedPayload) {
      const payload = rd.bytes();
      const list = f.packed ? (pending.get(f.name) ?? pending.set(f.name, []).get(f.name)!) : (obj[f.name] as unknown[]);
      const w = fixedWidth(kind);
      if (w > 0 && payload.length % w !== 0) rd.fail(`${m}.${f.name} packed length is not a multiple of ${w}`);
      const sub = new Reader(payload);
      while (sub.pos < payload.length) list.push(readScalar(sub, kind, f.name));
      continue;
    } else {
      value = readScalar(rd, kind, f.name);
      if (f.packed) {
        (pending.get(f.name) ?? pending.set(f.name, []).get(f.name)!).push(value);
        continue;
      }
    }
    if (f.repeated) (obj[f.name] as unknown[]).push(value);
    else obj[f.name] = value; // proto semantics: the last occurrence wins
  }
  if (rd.pos !== end) rd.fail(`${m} overruns its length`);
  for (const [name, values] of pending) {
    const f = info.ordered.find((x) => x.name === name)!;
    obj[name] = typedFrom(f.kind, values);
  }
  if (unknown) obj.unknown = unknown;
  return obj;
}

/** Decodes one message of the given type from bytes. Throws LrError('parse') on malformed input. */
export function decodeAs<T>(m: MessageName, bytes: Uint8Array): T {
  const rd = new Reader(bytes);
  return decodeMessage(rd, m, bytes.length, 0) as T;
}

export function decodeModel(bytes: Uint8Array): ModelProto {
  if (bytes.length === 0) throw new LrError('parse', 'not a valid ONNX protobuf: the file is empty');
  return decodeAs<ModelProto>('ModelProto', bytes);
}

function writeScalar(w: Writer, kind: FieldSpec['kind'], v: unknown): void {
  switch (kind) {
    case 'i64': case 'pi64': case 'u64': case 'pu64': w.int64(v as bigint); return;
    case 'i64n': w.int64Number(v as number); return;
    case 'i32': case 'pi32': w.int32(v as number); return;
    case 'f32': case 'pf32': w.float(v as number); return;
    case 'f64': case 'pf64': w.double(v as number); return;
    default: throw new Error(`not a scalar kind: ${kind}`);
  }
}

function writeValue(w: Writer, f: FieldSpec, v: unknown, depth: number): void {
  const kind = f.kind;
  if (isMessageKind(kind)) {
    const child = new Writer();
    encodeMessage(child, kind, v as Obj, depth + 1);
    w.message(f.no, child);
  } else if (kind === 'str') {
    w.lenBytes(f.no, utf8enc.encode(v as string));
  } else if (kind === 'bytes' || kind === 'raw') {
    w.lenBytes(f.no, v as Uint8Array);
  } else {
    w.tag(f.no, expectedWireType(kind));
    writeScalar(w, kind, v);
  }
}

function encodeMessage(w: Writer, m: MessageName, obj: Obj, depth: number): void {
  if (depth > MAX_DEPTH) throw new LrError('unsupported', `messages nested deeper than ${MAX_DEPTH}`);
  for (const f of INFO.get(m)!.ordered) {
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    if (f.packed) {
      const arr = v as ArrayLike<unknown> & { buffer?: ArrayBufferLike; byteOffset?: number; byteLength?: number };
      if (arr.length === 0) continue;
      const width = fixedWidth(f.kind);
      if (width > 0 && arr.byteLength !== undefined && arr.buffer) {
        // Fixed-width payloads are already in wire layout (little-endian host).
        w.lenBytes(f.no, new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength));
      } else {
        const child = new Writer();
        for (let i = 0; i < arr.length; i++) writeScalar(child, f.kind, arr[i]);
        w.message(f.no, child);
      }
    } else if (f.repeated) {
      for (const item of v as unknown[]) writeValue(w, f, item, depth);
    } else {
      writeValue(w, f, v, depth);
    }
  }
  const unknown = obj.unknown as Uint8Array[] | undefined;
  if (unknown) for (const u of unknown) w.raw(u);
}

/** Encodes a message as a list of byte parts (large payloads are not copied). */
export function encodeParts(m: MessageName, obj: object): Uint8Array[] {
  const w = new Writer();
  encodeMessage(w, m, obj as Obj, 0);
  return w.finish();
}

export function encodeAs(m: MessageName, obj: object): Uint8Array {
  return concatParts(encodeParts(m, obj));
}

export function encodeModel(model: ModelProto): Uint8Array {
  return encodeAs('ModelProto', model);
}

export function partsLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Tensor payloads are viewed in place as little-endian typed arrays.
  throw new Error('onnx-lr needs a little-endian host');
}
