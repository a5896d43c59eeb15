// A patient behind a firewall that blocks UDP (a hospital guest network): the page still gets two-way video,
// over ICE-TCP to the SFU's passive TCP candidate on the shard's port.
//
// The patient's Chromium runs in a network namespace the test creates, whose nftables drop every UDP packet it
// sends; it reaches the gateway over a veth pair (the gateway listens on the veth's outer address, with its
// generated certificate, as a clinic's LAN server would). The practitioner's Chromium runs beside the gateway.
// The test asserts the patient's selected candidate pair is TCP, so it cannot pass over UDP.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
// Outside CI a machine without root cannot make the namespace: say so and skip. In CI it must run.
const skip = process.getuid?.() !== 0 && process.env.CI !== 'true' ? 'needs root for ip netns and nft (runs in CI)' : false;
let netns;
let tmp;
let server;
const browsers = [];
const pageConsole = [];

before(async () => {
  if (skip) return;
  h.checkPrerequisites();
  netns = h.makeNetns();
  const nft = (...args) => execFileSync('ip', ['netns', 'exec', netns.name, 'nft', ...args], { stdio: 'pipe' });
  nft('add', 'table', 'inet', 'firewall');
  nft('add', 'chain', 'inet', 'firewall', 'out', '{ type filter hook output priority 0 ; }');
  nft('add', 'rule', 'inet', 'firewall', 'out', 'meta', 'l4proto', 'udp', 'counter', 'drop');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-tcp-'));
  server = await h.startGateway(
    tmp,
    { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local', RTC_BIND_IPS: netns.outerAddress },
    { host: netns.outerAddress, https: true },
  );
  browsers.push(await h.launchBrowser({ loopback: false }), await h.launchBrowser({ netns: netns.name, loopback: false }));
});

after(async () => {
  await browsers[1]?.close().catch(() => {});
  await h.teardown({ prefix: 'tcp-', browser: browsers[0], server, tmp, pageConsole });
  netns?.remove();
});

test('a page whose network drops all UDP gets two-way video over ICE-TCP', { skip }, async () => {
  const { pages, mediaMs } = await h.twoPageVisit({ server, apiKey, browsers, pageConsole, label: 'ICE-TCP' });
  const patient = await h.selectedPair(pages[1]);
  const doctor = await h.selectedPair(pages[0]);
  console.log(`tcp: both pages decoding ${mediaMs} ms after the clicks; patient's pair ${JSON.stringify(patient)}; doctor's ${JSON.stringify(doctor)}`);
  assert.equal(patient.local.protocol, 'tcp', `the patient's media goes over TCP: ${JSON.stringify(patient)}`);
  assert.equal(patient.remote.address, netns.outerAddress, JSON.stringify(patient));
  // The firewall really dropped UDP: its counter saw the patient's attempts.
  const rules = execFileSync('ip', ['netns', 'exec', netns.name, 'nft', 'list', 'chain', 'inet', 'firewall', 'out']).toString();
  const dropped = Number(/counter packets (\d+)/.exec(rules)?.[1] ?? 0);
  assert.ok(dropped > 0, `no UDP packet met the firewall: ${rules}`);
});
