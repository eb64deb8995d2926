/**
 * Protobuf wire format primitives (varints, fixed32/64, length-delimited fields).
 * Varints are read as two 32-bit halves so that int64 values never pass through a lossy
 * double: callers pick a number (checked safe) or a bigint.
 */
import { LrError } from '../errors.js';

export const WT_VARINT = 0;
export const WT_I64 = 1;
export const WT_LEN = 2;
export const WT_SGROUP = 3;
export const WT_EGROUP = 4;
export const WT_I32 = 5;

export class Reader {
  pos: number;
  readonly view: DataView;
  constructor(readonly buf: Uint8Array, start = 0, readonly end = buf.length) {
    this.pos = start;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  fail(what: string): never {
    throw new LrError('parse', `not a valid ONNX protobuf: ${what} at byte ${this.pos}`);
  }

  /** Reads a varint into [lo, hi] unsigned 32-bit halves. */
  varint64(): [number, number] {
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.buf[this.pos++];
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) { lo |= (b & 0x0f) << 28; hi |= (b & 0x7f) >>> 4; }
      else hi |= (b & 0x7f) << (shift - 32);
      if ((b & 0x80) === 0) return [lo >>> 0, hi >>> 0];
      shift += 7;
    }
    this.fail('varint longer than 10 bytes');
  }

  /** Varint as a JS number, for lengths and small values. */
  uint32(): number {
    const [lo, hi] = this.varint64();
    if (hi !== 0) this.fail('length or tag out of range');
    return lo;
  }

  int32(): number {
    return this.varint64()[0] | 0;
  }

  int64(): bigint {
    const [lo, hi] = this.varint64();
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }

  uint64(): bigint {
    const [lo, hi] = this.varint64();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** int64 that must fit a JS number exactly (dims, versions, offsets). */
  int64Number(field: string): number {
    const [lo, hi] = this.varint64();
    const signedHi = hi | 0;
    const v = signedHi * 4294967296 + lo;
    if (!Number.isSafeInteger(v)) this.fail(`${field} value does not fit a safe integer`);
    return v;
  }

  float(): number {
    if (this.pos + 4 > this.end) this.fail('truncated float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  double(): number {
    if (this.pos + 8 > this.end) this.fail('truncated double');
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Length-delimited payload as a view into the input (no copy). */
  bytes(): Uint8Array {
    const len = this.uint32();
    if (len > this.end - this.pos) this.fail('length-delimited field runs past the end');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** Skips one field of the given wire type (used to capture unknown fields verbatim). */
  skip(wireType: number, fieldNo: number, depth = 0): void {
    if (depth > 100) this.fail('groups nested deeper than 100');
    switch (wireType) {
      case WT_VARINT: this.varint64(); return;
      case WT_I64: this.advance(8); return;
      case WT_I32: this.advance(4); return;
      case WT_LEN: this.bytes(); return;
      case WT_SGROUP: {
        for (;;) {
          if (this.pos >= this.end) this.fail('unterminated group');
          const tag = this.uint32();
          const wt = tag & 7;
          if (wt === WT_EGROUP) {
            if (tag >>> 3 !== fieldNo) this.fail('mismatched end group');
            return;
          }
          this.skip(wt, tag >>> 3, depth + 1);
        }
      }
      default: this.fail(`invalid wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) this.fail('truncated fixed-width field');
    this.pos += n;
  }
}

/**
 * Accumulates output as a list of parts: small scalar writes go to a scratch buffer,
 * large byte payloads (tensor data) are referenced, not copied, until the final join.
 */
export class Writer {
  readonly parts: Uint8Array[] = [];
  private scratch = new Uint8Array(256);
  private scratchView = new DataView(this.scratch.buffer);
  private used = 0;

  private ensure(n: number): void {
    if (this.used + n <= this.scratch.length) return;
    this.flush();
    if (n > this.scratch.length) {
      this.scratch = new Uint8Array(Math.max(n, 256));
      this.scratchView = new DataView(this.scratch.buffer);
    }
  }

  private flush(): void {
    if (this.used === 0) return;
    this.parts.push(this.scratch.slice(0, this.used));
    this.used = 0;
  }

  /** Writes an unsigned varint given as lo/hi 32-bit halves. */
  varint64(lo: number, hi: number): void {
    this.ensure(10);
    lo >>>= 0; hi >>>= 0;
    while (hi !== 0 || lo > 0x7f) {
      this.scratch[this.used++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    this.scratch[this.used++] = lo;
  }

  uint32(v: number): void { this.varint64(v >>> 0, 0); }

  int32(v: number): void {
    // Negative int32 is sign-extended to 64 bits on the wire (10 bytes).
    this.varint64(v >>> 0, v < 0 ? 0xffffffff : 0);
  }

  int64(v: bigint): void {
    const u = BigInt.asUintN(64, v);
    this.varint64(Number(u & 0xffffffffn), Number(u >> 32n));
  }

  int64Number(v: number): void {
    if (!Number.isSafeInteger(v)) throw new LrError('unsupported', `cannot encode int64 ${v}: not a safe integer`);
    this.int64(BigInt(v));
  }

  tag(fieldNo: number, wireType: number): void { this.uint32((fieldNo << 3) | wireType); }

  float(v: number): void {
    this.ensure(4);
    this.scratchView.setFloat32(this.used, v, true);
    this.used += 4;
  }

  double(v: number): void {
    this.ensure(8);
    this.scratchView.setFloat64(this.used, v, true);
    this.used += 8;
  }

  /** Appends raw bytes; large payloads are referenced rather than copied. */
  raw(b: Uint8Array): void {
    if (b.length <= 64) {
      this.ensure(b.length);
      this.scratch.set(b, this.used);
      this.used += b.length;
    } else {
      this.flush();
      this.parts.push(b);
    }
  }

  /** Appends another writer's output as a length-delimited field. */
  message(fieldNo: number, child: Writer): void {
    const parts = child.finish();
    let len = 0;
    for (const p of parts) len += p.length;
    // Protobuf lengths are 32-bit; a larger message cannot be written (use external data).
    if (len > 0xffffffff) throw new LrError('unsupported', `message field ${fieldNo} is ${len} bytes, past protobuf's limit`);
    this.tag(fieldNo, WT_LEN);
    this.uint32(len);
    this.flush();
    for (const p of parts) this.parts.push(p);
  }

  lenBytes(fieldNo: number, b: Uint8Array): void {
    this.tag(fieldNo, WT_LEN);
    this.uint32(b.length);
    this.raw(b);
  }

  finish(): Uint8Array[] {
    this.flush();
    return this.parts;
  }
}

export function concatParts(parts: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}
