/**
 * Headless Chromium for the page's tests and measurements: the browser, a page on the
 * served build that has said it is ready, and the errors it printed on the way.
 *
 * Needs Debian's chromium at /usr/bin/chromium (ONNX_LR_CHROMIUM names another, or a
 * missing one, to check the skip): a test file skips without it and says why, unless
 * CI=true, where .ci/run installs it and its absence fails.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Browser, Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { serveFolder, type StaticServer } from './static-server.js';
import { CHROMIUM, haveChromium, launchChromium } from '../../tools/chromium.js';

export { CHROMIUM, haveChromium, launchChromium };

const ROOT = path.resolve(import.meta.dirname, '../..');

/** Builds the page (vite.web.config.ts) into `outDir`, as `npm run build:web` builds dist-web/. */
export async function buildPage(outDir: string): Promise<void> {
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', '-c', 'vite.web.config.ts'], {
    cwd: ROOT, env: { ...process.env, ONNX_LR_WEB_OUT: outDir },
  });
}

/**
 * Call at the top of a test file that needs Chromium: without it, prints why the file is
 * skipped, or under CI=true adds a test that fails.
 */
export function chromiumOrSkip(testFile: string): boolean {
  const name = path.relative(ROOT, testFile);
  const ci = process.env.CI === 'true';
  if (!haveChromium && !ci) console.log(`${name} skipped: no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  describe(`${name} without chromium`, () => {
    it.runIf(!haveChromium && ci)('CI has Chromium for the page tests', () => {
      expect.fail(`no Chromium at ${CHROMIUM}: .ci/run installs Debian's chromium package`);
    });
  });
  return haveChromium;
}

export interface OpenedPage {
  /** The build's server (COOP/COEP), with the paths it was asked for. */
  server: StaticServer;
  browser: Browser;
  page: Page;
  /** Console errors and uncaught page errors, as they come (a test expects none). */
  problems: string[];
  /** Closes the browser and the server. */
  close(): Promise<void>;
}

/**
 * The page built in `dist` (buildPage), served, opened in a new browser at `query` and
 * waited for until it says it is ready (`body[data-state=ready]`: ORT Web loaded).
 * Downloads are accepted. `beforeGoto` sees the page first, e.g. to watch its requests.
 */
export async function openPage(dist: string, opts: { query?: string; readyTimeout?: number; beforeGoto?: (page: Page, server: StaticServer) => void } = {}): Promise<OpenedPage> {
  const server = await serveFolder(dist);
  let browser: Browser | undefined;
  try {
    browser = await launchChromium();
    const page = await browser.newPage({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    opts.beforeGoto?.(page, server);
    await page.goto(`${server.url}${opts.query ?? ''}`);
    await page.waitForFunction("document.body.dataset.state === 'ready'", null, { timeout: opts.readyTimeout ?? 30_000 });
    const b = browser;
    return { server, browser, page, problems, close: async () => { await b.close(); await server.close(); } };
  } catch (e) {
    await browser?.close();
    await server.close();
    throw e;
  }
}
