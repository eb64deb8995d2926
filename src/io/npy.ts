/**
 * NumPy .npy reading and writing, so users can hand us real inputs
 * (`--input NAME:file.npy`) and we can hand back tensors numpy reads.
 *
 * .npy (format spec: numpy/lib/format.py): magic "\x93NUMPY", version byte pair, header
 * length (u16 LE in v1, u32 LE in v2/v3), then a Python dict literal
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a
 * newline, then the raw C-order data. v3 only differs by allowing UTF-8 in the header.
 * .npz archives of them: npz.ts.
 */
import { writeFileSync } from 'node:fs';
import { err, ok, type Result } from '../errors.js';
import { readSideInput } from '../util/bounds.js';

export type NpyDtype = 'f2' | 'f4' | 'f8' | 'i1' | 'i2' | 'i4' | 'i8' | 'u1' | 'u2' | 'u4' | 'u8' | 'b1';

/** f2 is stored as raw IEEE half bits (Uint16Array); b1 as 0/1 bytes (Uint8Array). */
export type NpyData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

interface DtypeInfo { size: number; make: (buf: ArrayBuffer) => NpyData }

const DTYPES: Record<NpyDtype, DtypeInfo> = {
  f2: { size: 2, make: (b) => new Uint16Array(b) },
  f4: { size: 4, make: (b) => new Float32Array(b) },
  f8: { size: 8, make: (b) => new Float64Array(b) },
  i1: { size: 1, make: (b) => new Int8Array(b) },
  i2: { size: 2, make: (b) => new Int16Array(b) },
  i4: { size: 4, make: (b) => new Int32Array(b) },
  i8: { size: 8, make: (b) => new BigInt64Array(b) },
  u1: { size: 1, make: (b) => new Uint8Array(b) },
  u2: { size: 2, make: (b) => new Uint16Array(b) },
  u4: { size: 4, make: (b) => new Uint32Array(b) },
  u8: { size: 8, make: (b) => new BigUint64Array(b) },
  b1: { size: 1, make: (b) => new Uint8Array(b) },
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

// ---------------------------------------------------------------- .npy reading

/** Parses .npy bytes; `label` (usually the file name) prefixes every error message. */
export function parseNpy(bytes: Uint8Array, label = '<npy>'): Result<NpyArray> {
  const fail = (msg: string) => err('parse', `${label}: ${msg}`);
  if (bytes.length < 10 || MAGIC.some((m, i) => bytes[i] !== m)) return fail('not a .npy file (bad magic)');
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) { headerLen = view.getUint16(8, true); start = 10; }
  else if (major === 2 || major === 3) {
    if (bytes.length < 12) return fail('truncated header');
    headerLen = view.getUint32(8, true); start = 12;
  } else return fail(`unsupported .npy format version ${major}.${bytes[7]}`);
  if (start + headerLen > bytes.length) return fail('truncated header');
  const headerText = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const header = parseHeader(headerText);
  if (!header.ok) return fail(header.error.message);
  const { descr, fortran, shape } = header.value;
  if (fortran && shape.length > 1) {
    return fail('fortran_order=True is not supported; save with np.ascontiguousarray(a)');
  }
  const dt = parseDescr(descr);
  if (!dt.ok) return fail(dt.error.message);
  const { dtype, bigEndian } = dt.value;
  const info = DTYPES[dtype];
  const count = shape.reduce((a, b) => a * b, 1);
  const dataStart = start + headerLen;
  const nbytes = count * info.size;
  if (!Number.isSafeInteger(nbytes)) return fail(`shape (${shape.join(', ')}) is too large`);
  if (dataStart + nbytes > bytes.length) {
    return fail(`truncated data: shape (${shape.join(', ')}) of ${descr} needs ${nbytes} bytes, file has ${bytes.length - dataStart}`);
  }
  // Copy into a fresh buffer: typed arrays need aligned offsets, callers may keep the data,
  // and Buffer.slice (node) would return a view into a shared pool, not a copy.
  const raw = new Uint8Array(nbytes);
  raw.set(bytes.subarray(dataStart, dataStart + nbytes));
  if (bigEndian && info.size > 1) byteSwap(raw, info.size);
  return ok({ dtype, shape, data: info.make(raw.buffer) });
}

interface Header { descr: string; fortran: boolean; shape: number[] }

/** Parses the header dict literal. Only the three keys numpy writes are accepted. */
function parseHeader(text: string): Result<Header> {
  const bad = (why: string) => err('parse', `bad .npy header (${why}): ${text.trim().slice(0, 120)}`);
  const lit = parsePyLiteral(text.trim());
  if (!lit.ok) return bad(lit.error.message);
  const d = lit.value;
  if (!(d instanceof Map)) return bad('not a dict');
  const descr = d.get('descr');
  const fortran = d.get('fortran_order');
  const shape = d.get('shape');
  if (typeof descr !== 'string') {
    return bad(Array.isArray(descr) ? 'structured dtypes are not supported' : "missing 'descr'");
  }
  if (typeof fortran !== 'boolean') return bad("missing 'fortran_order'");
  if (!Array.isArray(shape) || !shape.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) {
    return bad("'shape' is not a tuple of non-negative integers");
  }
  return ok({ descr, fortran, shape: shape as number[] });
}

type PyValue = string | number | boolean | null | PyValue[] | Map<string, PyValue>;

/** A tiny parser for the Python literals that appear in .npy headers (dict, tuple, list, str, int, bool). */
function parsePyLiteral(s: string): Result<PyValue> {
  let i = 0;
  const ws = () => { while (i < s.length && /\s/.test(s[i]!)) i++; };
  const value = (): PyValue => {
    ws();
    const c = s[i];
    if (c === '{' || c === '(' || c === '[') {
      const close = c === '{' ? '}' : c === '(' ? ')' : ']';
      i++;
      const items: PyValue[] = [];
      const map = new Map<string, PyValue>();
      for (;;) {
        ws();
        if (s[i] === close) { i++; break; }
        const v = value();
        if (c === '{') {
          ws();
          if (s[i] !== ':') throw new Error(`expected ':' at ${i}`);
          i++;
          if (typeof v !== 'string') throw new Error('dict key is not a string');
          map.set(v, value());
        } else items.push(v);
        ws();
        if (s[i] === ',') { i++; continue; }
        if (s[i] === close) { i++; break; }
        throw new Error(`expected ',' or '${close}' at ${i}`);
      }
      return c === '{' ? map : items;
    }
    if (c === "'" || c === '"') {
      const end = s.indexOf(c, i + 1);
      if (end < 0) throw new Error('unterminated string');
      const str = s.slice(i + 1, end);
      i = end + 1;
      return str;
    }
    const m = /^(True|False|None|-?\d+L?)/.exec(s.slice(i));
    if (!m) throw new Error(`unexpected character at ${i}`);
    i += m[0].length;
    if (m[0] === 'True') return true;
    if (m[0] === 'False') return false;
    if (m[0] === 'None') return null;
    return Number.parseInt(m[0], 10);
  };
  try {
    const v = value();
    ws();
    if (i !== s.length) return err('parse', `trailing text at ${i}`);
    return ok(v);
  } catch (e) {
    return err('parse', (e as Error).message);
  }
}

function parseDescr(descr: string): Result<{ dtype: NpyDtype; bigEndian: boolean }> {
  const m = /^([<>|=]?)([a-zA-Z])(\d+)$/.exec(descr);
  const unsupported = () => err('parse', `unsupported dtype '${descr}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)`);
  if (!m) return unsupported();
  const [, order, kind, size] = m;
  const key = `${kind}${size}`;
  if (!(key in DTYPES)) return unsupported();
  // '=' is native order; every platform ORT runs on here is little-endian.
  return ok({ dtype: key as NpyDtype, bigEndian: order === '>' });
}

function byteSwap(b: Uint8Array, size: number): void {
  for (let o = 0; o < b.length; o += size) {
    for (let x = 0, y = size - 1; x < y; x++, y--) { const t = b[o + x]!; b[o + x] = b[o + y]!; b[o + y] = t; }
  }
}

// ---------------------------------------------------------------- .npy writing

/** Encodes an array as .npy (v1 header unless it is too long, then v2), little-endian, C order. */
export function encodeNpy(arr: NpyArray): Uint8Array {
  const info = DTYPES[arr.dtype];
  const count = arr.shape.reduce((a, b) => a * b, 1);
  if (arr.data.length !== count) {
    throw new Error(`encodeNpy: data has ${arr.data.length} elements, shape (${arr.shape.join(', ')}) needs ${count}`);
  }
  const order = info.size === 1 ? '|' : '<';
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  const dict = `{'descr': '${order}${arr.dtype}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // numpy pads so that magic + length field + header is a multiple of 64 and ends in '\n'.
  let major = 1;
  let pre = 10;
  let total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  if (total - pre > 0xffff) { major = 2; pre = 12; total = Math.ceil((pre + dict.length + 1) / 64) * 64; }
  const headerLen = total - pre;
  const header = dict.padEnd(headerLen - 1, ' ') + '\n';
  const nbytes = count * info.size;
  const out = new Uint8Array(total + nbytes);
  out.set(MAGIC, 0);
  out[6] = major; out[7] = 0;
  const view = new DataView(out.buffer);
  if (major === 1) view.setUint16(8, headerLen, true); else view.setUint32(8, headerLen, true);
  for (let k = 0; k < header.length; k++) out[pre + k] = header.charCodeAt(k);
  out.set(new Uint8Array(arr.data.buffer, arr.data.byteOffset, nbytes), total);
  return out;
}

// ---------------------------------------------------------------- files

/** Writes bytes to a file; a failure is an io error naming the path. */
export function writeBytes(path: string, bytes: Uint8Array): Result<void> {
  try { writeFileSync(path, bytes); return ok(undefined); } catch (e) {
    return err('io', `cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Reads a .npy file: a regular file of at most `maxBytes` (default 1 GiB). */
export function readNpy(path: string, opts: { maxBytes?: number } = {}): Result<NpyArray> {
  const b = readSideInput(path, 'array file', opts.maxBytes);
  return b.ok ? parseNpy(b.value, path) : b;
}

export function writeNpy(path: string, arr: NpyArray): Result<void> {
  return writeBytes(path, encodeNpy(arr));
}
