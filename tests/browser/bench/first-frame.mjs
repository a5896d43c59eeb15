// Click-to-first-remote-frame: two pages join a fresh meeting together, each times its Join click until its
// first remote video frame is decoded. ROUNDS meetings (default 6), one line of JSON at the end.
//
//   GATEWAY_BIN=target/debug/telehealth-gateway ROUNDS=6 node tests/browser/bench/first-frame.mjs
import * as h from '../harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

const key = randomBytes(24).toString('base64url').slice(0, 32);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'first-frame-'));
const server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: key, TELEHEALTH_PROVIDER: 'local' });
const browser = await h.launchBrowser();
const samples = [];
try {
  for (let round = 0; round < Number(process.env.ROUNDS || 6); round++) {
    const { json } = await h.api(server.baseUrl, { action: 'create-meeting' }, key);
    const pages = await h.preparePages(browser, server.baseUrl, server.baseUrl + json.link, ['First Page', 'Second Page']);
    await Promise.all(
      pages.map(async (page) => {
        const clicked = Date.now();
        await page.getByRole('button', { name: 'Join' }).click();
        await h.eventually(async () => (await h.inboundStats(page))?.framesDecoded > 0, { interval: 10 });
        samples.push(Date.now() - clicked);
      }),
    );
    for (const page of pages) await page.context().close();
  }
} finally {
  await browser.close();
  server.proc.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}
const sorted = [...samples].sort((a, b) => a - b);
console.log(JSON.stringify({ bench: 'first-frame', samples, median_ms: sorted[Math.floor(sorted.length / 2)] }));
