/**
 * A small JSON Schema validator for the schemas in schema/ (the subset they use; any other
 * keyword is an error, so a schema can never lean on a check this does not make).
 * $ref: "#/$defs/x" in the same file, or "other.schema.json#/$defs/x" beside it.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

type Schema = Record<string, unknown>;

const NOTES = new Set(['$schema', '$id', 'title', 'description', '$defs']);
const CHECKS = new Set(['type', 'const', 'enum', 'required', 'properties', 'additionalProperties', 'items', 'allOf', 'minimum', '$ref']);

const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
const isType = (v: unknown, t: string): boolean => (t === 'integer' ? Number.isInteger(v) : t === 'number' ? typeof v === 'number' : typeOf(v) === t);

export class SchemaValidator {
  private readonly files = new Map<string, Schema>();

  constructor(private readonly dir: string) {}

  private file(name: string): Schema {
    let s = this.files.get(name);
    if (!s) { s = JSON.parse(readFileSync(path.join(this.dir, name), 'utf8')) as Schema; this.files.set(name, s); }
    return s;
  }

  /** Every error, as "path: what", for `value` against the schema file `name`. */
  validate(name: string, value: unknown): string[] {
    const errors: string[] = [];
    this.check(this.file(name), name, value, '$', errors);
    return errors;
  }

  private resolve(ref: string, from: string): [Schema, string] {
    const [fileName, pointer = ''] = ref.split('#');
    const file = fileName === '' ? from : fileName;
    let s: unknown = this.file(file);
    for (const part of pointer.split('/').filter((p) => p !== '')) s = (s as Schema)[part];
    if (typeof s !== 'object' || s === null) throw new Error(`schema ${from}: $ref ${ref} names nothing`);
    return [s as Schema, file];
  }

  private check(s: Schema, file: string, v: unknown, at: string, errors: string[]): void {
    for (const k of Object.keys(s)) if (!NOTES.has(k) && !CHECKS.has(k)) throw new Error(`schema ${file}: keyword "${k}" at ${at} is not supported by this validator`);
    if (typeof s.$ref === 'string') { const [r, f] = this.resolve(s.$ref, file); this.check(r, f, v, at, errors); }
    for (const sub of (s.allOf as Schema[] | undefined) ?? []) this.check(sub, file, v, at, errors);
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string];
      if (!types.some((t) => isType(v, t))) { errors.push(`${at}: expected ${types.join(' or ')}, got ${typeOf(v)}`); return; }
    }
    if ('const' in s && v !== s.const) errors.push(`${at}: expected ${JSON.stringify(s.const)}, got ${JSON.stringify(v)}`);
    if (s.enum !== undefined && !(s.enum as unknown[]).includes(v)) errors.push(`${at}: ${JSON.stringify(v)} is not one of ${JSON.stringify(s.enum)}`);
    if (s.minimum !== undefined && typeof v === 'number' && v < (s.minimum as number)) errors.push(`${at}: ${v} is below ${s.minimum as number}`);
    if (Array.isArray(v) && s.items) v.forEach((x, i) => this.check(s.items as Schema, file, x, `${at}[${i}]`, errors));
    if (typeOf(v) === 'object') {
      const o = v as Record<string, unknown>;
      for (const r of (s.required as string[] | undefined) ?? []) if (!(r in o)) errors.push(`${at}: "${r}" is missing`);
      const props = (s.properties as Record<string, Schema> | undefined) ?? {};
      for (const [k, x] of Object.entries(o)) {
        if (props[k]) this.check(props[k], file, x, `${at}.${k}`, errors);
        else if (s.additionalProperties === false) errors.push(`${at}: "${k}" is not in the schema`);
        else if (typeof s.additionalProperties === 'object') this.check(s.additionalProperties as Schema, file, x, `${at}.${k}`, errors);
      }
    }
  }
}
