// Media through the SFU beyond a pair: three headless Chromium participants in one visit, and one participant
// reloading the page mid-visit. Real gateway binary, fake camera and microphone, real WebRTC.
//
//   three join: each page decodes both others' video and hears both;
//   one reloads mid-visit and joins again: the other two decode the newcomer and it decodes them, and nobody is
//   left with a stale tile.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { eventually } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
const NAMES = ['Dr. Rivera', 'Sam Patient', 'Interpreter Lee'];

let tmp;
let server;
let baseUrl;
let browser;
let link;
const pages = [];
const pageConsole = [];

const remoteTiles = (page) => page.locator('.tile--remote').count();

/** Waits until `page` decodes `n` remote videos (each growing) and receives `n` audio streams. */
function decodesEveryone(page, n, who) {
  return h.receivesMedia(page, `${who}: ${n} remote videos decoding and ${n} audio streams`, { video: n });
}

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-media-'));
  server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local' });
  baseUrl = server.baseUrl;
  browser = await h.launchBrowser();
  const { status, json } = await h.api(baseUrl, { action: 'create-meeting' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  link = baseUrl + json.link;
});

after(() => h.teardown({ prefix: 'media-', browser, server, tmp, pageConsole }));

test('three participants each decode both others and hear both', async () => {
  pages.push(...(await h.preparePages(browser, baseUrl, link, NAMES, pageConsole)));
  await h.joinAll(pages);
  for (const [i, page] of pages.entries()) {
    await decodesEveryone(page, 2, NAMES[i]);
    await eventually(async () => (await page.getByTestId('participant-count').getAttribute('data-count')) === '3', {
      what: `${NAMES[i]}: participant count 3`,
    });
    assert.equal(await remoteTiles(page), 2, `${NAMES[i]}: two remote tiles`);
    const names = await page.locator('.tile--remote .tile-name').allInnerTexts();
    assert.deepEqual(names.sort(), NAMES.filter((_, j) => j !== i).sort());
  }
  for (const [i, page] of pages.entries()) {
    const videos = (await h.liveStreams(page, 3000)).video;
    console.log('3-way per remote stream', NAMES[i], JSON.stringify(videos.map((v) => ({ fps: +v.fps.toFixed(1), kbps: Math.round(v.kbps) }))));
    for (const v of videos) assert.ok(v.fps >= 5, `${NAMES[i]}: a remote stream decodes at ${v.fps} fps`);
  }
});

test('a participant who reloads the page mid-visit comes back for everyone, with no stale tile', async () => {
  assert.equal(pages.length, 3, 'needs the visit from the previous test');
  const [a, b, c] = pages;
  await c.reload();
  // Everyone else sees the reload as a leave at once (the page's pagehide), not after a timeout.
  for (const page of [a, b]) {
    await eventually(async () => (await remoteTiles(page)) === 1, { what: 'the reloading participant to leave' });
  }
  await h.prepareJoin(c, link, NAMES[2]);
  await c.getByRole('button', { name: 'Join' }).click();
  await decodesEveryone(c, 2, `${NAMES[2]} after reloading`);
  for (const [i, page] of [a, b].entries()) {
    await decodesEveryone(page, 2, `${NAMES[i]} after the reload`);
    await eventually(async () => (await remoteTiles(page)) === 2, { what: `${NAMES[i]}: two remote tiles again` });
    await eventually(async () => (await page.getByTestId('participant-count').getAttribute('data-count')) === '3', {
      what: `${NAMES[i]}: participant count 3 again`,
    });
  }
  assert.equal(await remoteTiles(c), 2);
});
