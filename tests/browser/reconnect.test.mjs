// Visits that survive: real gateway binary, two headless Chromium pages with fake camera and microphone.
//
//   the patient's signaling socket is cut for 5 s by a TCP proxy the test controls (its page was loaded through
//   the proxy, so its SignalingUrl points there): the page reconnects by itself, the practitioner's page shows
//   "reconnecting" and never "left", no second tile appears, and both decode each other afterwards;
//   the gateway is killed with SIGKILL mid-visit and started again on the same data and port: both pages decode
//   each other again within 10 s of the restart, with no click, and neither shows a duplicate tile.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { eventually, sleep } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
const NAMES = ['Dr. Rivera', 'Sam Patient'];
const ENV = { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local' };

let tmp;
let server;
let proxy;
let browser;
const pages = [];
const pageConsole = [];

const remoteTiles = (page) => page.locator('.tile--remote').count();
const state = (page) => page.evaluate(() => window.__telehealth.state);

/** Waits until `page` decodes one remote video (growing) and receives one audio stream. */
function decodesTheOther(page, who, timeout = 30_000) {
  return h.receivesMedia(page, `${who}: the other's video decoding and audio arriving`, { timeout, interval: 100 });
}

/**
 * A TCP proxy in front of the gateway that can cut every connection through it and refuse new ones for a while,
 * as a Wi-Fi drop or a hospital proxy restarting would.
 */
function startProxy(target) {
  const open = new Set();
  let refuseUntil = 0;
  const srv = net.createServer((client) => {
    if (Date.now() < refuseUntil) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const pair = { client, upstream };
    open.add(pair);
    const close = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${srv.address().port}`,
        /** Drops every connection now and refuses new ones for `ms`. */
        cut(ms) {
          refuseUntil = Date.now() + ms;
          for (const { client, upstream } of open) {
            client.destroy();
            upstream.destroy();
          }
          open.clear();
        },
        close: () => new Promise((r) => srv.close(r)),
      });
    });
  });
}

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-reconnect-'));
  server = await h.startGateway(tmp, ENV);
  proxy = await startProxy(server.port);
  browser = await h.launchBrowser();
  const { status, json } = await h.api(server.baseUrl, { action: 'create-meeting' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  // The practitioner opens the link on the gateway itself, the patient through the proxy.
  for (const [i, base] of [server.baseUrl, proxy.url].entries()) {
    const page = await h.openPage(browser, base, NAMES[i], pageConsole);
    await h.prepareJoin(page, base + json.link, NAMES[i]);
    pages.push(page);
  }
  await h.joinAll(pages);
  for (const [i, page] of pages.entries()) await decodesTheOther(page, NAMES[i]);
});

after(async () => {
  // The browser first: the proxy's close waits for every connection through it, the browser's idle ones included.
  await h.teardown({ prefix: 'reconnect-', browser, server, tmp, pageConsole });
  await proxy?.close();
});

test("a patient's socket cut for 5 s resumes the visit; the other page showed reconnecting, never left", async () => {
  const [doctor, patient] = pages;
  const before = await doctor.evaluate(() => window.__telehealth.events.length);
  proxy.cut(5_000);
  const cutAt = Date.now();
  // While the patient is away the doctor keeps one tile for them, marked as reconnecting.
  await eventually(async () => (await doctor.locator('.tile--reconnecting').count()) === 1, {
    timeout: 5_000,
    what: 'the doctor to see the patient reconnecting',
  });
  assert.equal(await remoteTiles(doctor), 1);
  assert.equal(await state(patient), 'reconnecting');
  // Back by itself, with no click.
  await eventually(async () => (await state(patient)) === 'joined', { timeout: 15_000, what: 'the patient back in' });
  const back = Date.now() - cutAt;
  await eventually(async () => (await doctor.locator('.tile--reconnecting').count()) === 0, {
    what: 'the doctor to see the patient back',
  });
  for (const [i, page] of pages.entries()) await decodesTheOther(page, `${NAMES[i]} after the cut`, 15_000);
  const events = await doctor.evaluate((from) => window.__telehealth.events.slice(from), before);
  console.log(`socket cut 5000 ms: patient back in ${back} ms; doctor saw ${events.map((e) => e.type).join(', ')}`);
  assert.ok(events.some((e) => e.type === 'participantReconnecting'), JSON.stringify(events));
  assert.ok(!events.some((e) => e.type === 'participantLeft'), `the doctor saw a leave: ${JSON.stringify(events)}`);
  for (const page of pages) assert.equal(await remoteTiles(page), 1, 'one remote tile each');
});

test('after SIGKILL and a restart on the same data, both pages get media again within 10 s, with no click', async () => {
  const [doctor, patient] = pages;
  server.proc.kill('SIGKILL');
  await server.exited;
  fs.writeFileSync(path.join(h.artifacts, 'reconnect-server-before-kill.log'), server.output());
  await sleep(1_000); // down for a moment, as a crash and a supervisor's restart would be
  server = await h.startGateway(tmp, ENV, { port: server.port });
  const upAt = Date.now();
  const times = [];
  for (const [i, page] of [doctor, patient].entries()) {
    await decodesTheOther(page, `${NAMES[i]} after the restart`, 10_000);
    times.push(Date.now() - upAt);
  }
  console.log(`restart: media again ${times.map((t) => `${t} ms`).join(' and ')} after the gateway answered`);
  assert.ok(Math.max(...times) <= 10_000, `media came back after ${times} ms`);
  for (const page of pages) {
    assert.equal(await state(page), 'joined');
    assert.equal(await remoteTiles(page), 1, 'no duplicate tile');
    assert.equal(await page.getByTestId('participant-count').getAttribute('data-count'), '2');
  }
});
