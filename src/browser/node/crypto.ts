/** node:crypto in the browser build: createHash('sha256') only (graph/summary.ts's fingerprint). */
import { sha256 } from '../sha256.js';

class Sha256 {
  private parts: Uint8Array[] = [];

  update(data: string | Uint8Array): this {
    this.parts.push(typeof data === 'string' ? new TextEncoder().encode(data) : data);
    return this;
  }

  /** Hex only: the one encoding the library asks for. */
  digest(_encoding: 'hex'): string {
    const all = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of this.parts) { all.set(p, at); at += p.length; }
    return [...sha256(all)].map((b) => b.toString(16).padStart(2, '0')).join('');
  }
}

export function createHash(algorithm: string): Sha256 {
  if (algorithm !== 'sha256') throw new Error(`createHash(${algorithm}) is not available in the browser build`);
  return new Sha256();
}
