/**
 * A static file server for the built page (test only): GET of files under one folder,
 * nothing else. Cross-origin isolated (COOP/COEP), as `npm run web` serves it: the page's
 * worker then gets fine-grained timers for its latency figures.
 */
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.svg': 'image/svg+xml',
};

export interface StaticServer { url: string; close(): Promise<void>; requests: string[] }

/** `isolate: false` serves without COOP/COEP (the page then runs one thread and JS products). */
export async function serveFolder(root: string, opts: { isolate?: boolean } = {}): Promise<StaticServer> {
  const isolation = opts.isolate === false ? {} : { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    requests.push(url.pathname);
    const rel = decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname);
    const file = path.join(root, path.normalize(rel));
    if (req.method !== 'GET' || !file.startsWith(root + path.sep)) { res.writeHead(404).end(); return; }
    readFile(file).then((body) => {
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'content-length': body.length, ...isolation,
      });
      res.end(body);
    }, () => res.writeHead(404).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return { url: `http://127.0.0.1:${addr.port}/`, requests, close: () => new Promise((r) => server.close(() => r())) };
}
