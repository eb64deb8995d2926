/**
 * node:path in the browser build: POSIX string functions only (file names label a dropped
 * model in messages; nothing is resolved against a file system).
 */
export const sep = '/';

function normalizeParts(p: string): string[] {
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') out.pop(); else out.push(s);
  }
  return out;
}

export function isAbsolute(p: string): boolean { return p.startsWith('/'); }

export function join(...parts: string[]): string {
  const p = parts.filter((x) => x !== '').join('/');
  return (isAbsolute(p) ? '/' : '') + normalizeParts(p).join('/') || '.';
}

export function resolve(...parts: string[]): string {
  let p = '';
  for (const x of parts) p = isAbsolute(x) ? x : `${p}/${x}`;
  return `/${normalizeParts(p).join('/')}`;
}

export function basename(p: string, ext?: string): string {
  const b = p.replace(/\/+$/, '').split('/').pop() ?? '';
  return ext && b.endsWith(ext) && b !== ext ? b.slice(0, -ext.length) : b;
}

export function dirname(p: string): string {
  const t = p.replace(/\/+$/, '');
  if (t === '') return p.startsWith('/') ? '/' : '.';
  const i = t.lastIndexOf('/');
  return i < 0 ? '.' : i === 0 ? '/' : t.slice(0, i);
}

export function extname(p: string): string {
  const b = basename(p);
  const i = b.lastIndexOf('.');
  return i <= 0 ? '' : b.slice(i);
}

export function relative(from: string, to: string): string {
  const a = normalizeParts(resolve(from));
  const b = normalizeParts(resolve(to));
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}

export const posix = { sep, isAbsolute, join, resolve, basename, dirname, extname, relative };
export default posix;
