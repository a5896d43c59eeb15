// The offline clinic, as a new user meets it: the gateway and two browsers on a machine with one static LAN
// address and no default route (no internet, no DNS, no multicast or IPv6 route), the gateway left at its
// defaults (it gathers candidates on the machine's own addresses). Both pages open the join link and must see
// each other, from that LAN address: a browser gathers no loopback candidates.
//
// Runs inside a network namespace the test creates (root and iproute2 needed; in CI a failure, not a skip).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
// Outside CI a machine without root cannot make the namespace: say so and skip. In CI it must run.
const skip = process.getuid?.() !== 0 && process.env.CI !== 'true' ? 'needs root for ip netns (runs in CI)' : false;
let netns;
let tmp;
let server;
let browser;
const pageConsole = [];

before(async () => {
  if (skip) return;
  h.checkPrerequisites();
  netns = h.makeNetns();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-airgap-'));
  // RTC_BIND_IPS empty: the defaults, as a clinic runs it.
  server = await h.startGateway(
    tmp,
    { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local', RTC_BIND_IPS: '' },
    { netns: netns.name, host: netns.address, https: true },
  );
  browser = await h.launchBrowser({ netns: netns.name, loopback: false });
});

after(async () => {
  await h.teardown({ prefix: 'airgap-', browser, server, tmp, pageConsole });
  netns?.remove();
});

test('with no default route, two pages on the LAN address see and hear each other', { skip }, async () => {
  const routes = (await import('node:child_process')).execFileSync('ip', ['-n', netns.name, 'route', 'show', 'default']);
  assert.equal(routes.toString().trim(), '', 'the namespace has no default route');
  const { status, json } = await h.api(server.baseUrl, { action: 'create-meeting' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  const link = server.httpsUrl + json.link;
  const pages = await h.preparePages(browser, server.httpsUrl, link, ['Dr. Okafor', 'Robin Patient'], pageConsole);
  await h.joinAll(pages);
  for (const page of pages) {
    await h.receivesMedia(page, 'the other participant decoding, over the LAN address', { exact: true });
    const selected = await h.selectedPair(page);
    const pair = { local: selected.local.address, remote: selected.remote.address };
    // The browser's side of the pair is the LAN address (it gathers no loopback candidates); the SFU's side may be
    // its loopback candidate, which a browser on the same machine can reach.
    assert.equal(pair.local, netns.address, `the page sends from the LAN address: ${JSON.stringify(pair)}`);
    assert.ok([netns.address, '127.0.0.1'].includes(pair.remote), `the SFU's candidate: ${JSON.stringify(pair)}`);
  }
  assert.doesNotMatch(server.output(), /No such device|ServiceFailure|could not create a peer connection/);
});
