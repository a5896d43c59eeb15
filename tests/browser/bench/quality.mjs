// What each page decodes per remote stream in a room of PAGES headless Chromium participants (default 6): frames
// per second and kbit/s of every remote video over a WINDOW_MS window (default 10 s) once everyone decodes
// everyone. A cheaper media plane must not buy its figures with fewer frames. One line of JSON at the end.
//
//   GATEWAY_BIN=target/debug/telehealth-gateway PAGES=6 node tests/browser/bench/quality.mjs
import * as h from '../harness.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

const n = Number(process.env.PAGES || 6);
const windowMs = Number(process.env.WINDOW_MS || 10_000);
const key = randomBytes(24).toString('base64url').slice(0, 32);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'quality-'));
const server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: key, TELEHEALTH_PROVIDER: 'local' });
const browser = await h.launchBrowser();
let streams = [];
try {
  const { json } = await h.api(server.baseUrl, { action: 'create-meeting' }, key);
  const names = Array.from({ length: n }, (_, i) => `Participant ${i + 1}`);
  const pages = await h.preparePages(browser, server.baseUrl, server.baseUrl + json.link, names);
  await h.joinAll(pages);
  for (const page of pages) {
    await h.eventually(async () => (await h.liveStreams(page, 1000)).video.length >= n - 1, {
      timeout: 60_000,
      interval: 200,
      what: `every page decoding ${n - 1} remote videos`,
    });
  }
  const windows = await Promise.all(pages.map((p) => h.liveStreams(p, windowMs)));
  streams = windows.flatMap((w) => w.video);
} finally {
  await browser.close();
  server.proc.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  JSON.stringify({
    bench: 'quality',
    pages: n,
    streams: streams.length,
    fps_median: +median(streams.map((s) => s.fps)).toFixed(1),
    fps_min: +Math.min(...streams.map((s) => s.fps)).toFixed(1),
    kbps_median: Math.round(median(streams.map((s) => s.kbps))),
    kbps_min: Math.round(Math.min(...streams.map((s) => s.kbps))),
  }),
);
