// A patient whose network lets no UDP out, and no direct TCP to the SFU either, reaches the visit through the
// gateway's embedded TURN server: TURN over TCP, and, when that port is blocked as well, TURN inside TLS.
//
// The patient's Chromium runs in a network namespace the test creates, whose nftables drop every UDP packet it
// sends; the SFU offers no ICE-TCP (RTC_ICE_TCP=off), so a relay is the only way through. The gateway listens on
// the veth's outer address as a clinic's LAN server would, with TURN on TCP and on TLS (its generated
// certificate). The practitioner's Chromium runs beside the gateway. Each visit asserts that the patient's
// selected pair starts at a relay candidate allocated over the expected protocol, so it cannot pass otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
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
let turnTcp;
let turnTls;
const browsers = [];
const pageConsole = [];
const nft = (...args) => execFileSync('ip', ['netns', 'exec', netns.name, 'nft', ...args], { stdio: 'pipe' }).toString();

before(async () => {
  if (skip) return;
  h.checkPrerequisites();
  netns = h.makeNetns();
  nft('add', 'table', 'inet', 'firewall');
  nft('add', 'chain', 'inet', 'firewall', 'out', '{ type filter hook output priority 0 ; }');
  nft('add', 'rule', 'inet', 'firewall', 'out', 'meta', 'l4proto', 'udp', 'counter', 'drop');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-turn-'));
  [turnTcp, turnTls] = [await h.freePort(), await h.freePort()];
  server = await h.startGateway(
    tmp,
    {
      TELEHEALTH_API_KEYS: apiKey,
      TELEHEALTH_PROVIDER: 'local',
      RTC_BIND_IPS: netns.outerAddress,
      RTC_ICE_TCP: 'off',
      TURN_TCP_ADDR: `${netns.outerAddress}:${turnTcp}`,
      TURN_TLS_ADDR: `${netns.outerAddress}:${turnTls}`,
    },
    { host: netns.outerAddress, https: true },
  );
  // TURN inside TLS is checked like any TLS connection, and ignoreHTTPSErrors covers pages, not WebRTC's own
  // sockets: the patient's browser trusts the gateway's generated certificate by its key, as a clinic's browsers
  // would trust a real certificate for APP_URL's host.
  const cert = new X509Certificate(fs.readFileSync(path.join(tmp, 'certs', 'cert.pem')));
  const spki = createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  browsers.push(
    await h.launchBrowser({ loopback: false }),
    await h.launchBrowser({ netns: netns.name, loopback: false, args: [`--ignore-certificate-errors-spki-list=${spki}`] }),
  );
});

after(async () => {
  await browsers[1]?.close().catch(() => {});
  await h.teardown({ prefix: 'turn-', browser: browsers[0], server, tmp, pageConsole });
  netns?.remove();
});

/** A visit between the two browsers; returns the patient's selected candidate pair once both decode. */
async function visit(label) {
  const { pages, mediaMs } = await h.twoPageVisit({ server, apiKey, browsers, pageConsole, label });
  const patient = await h.selectedPair(pages[1]);
  console.log(`turn (${label}): both pages decoding ${mediaMs} ms after the clicks; patient's pair ${JSON.stringify(patient)}`);
  for (const page of pages) await page.close();
  return patient;
}

test('a page that can send no UDP gets two-way video through the embedded TURN server over TCP', { skip }, async () => {
  const patient = await visit('TURN over TCP');
  assert.equal(patient.local.type, 'relay', `the patient's media goes through a relay: ${JSON.stringify(patient)}`);
  assert.equal(patient.local.relayProtocol, 'tcp', JSON.stringify(patient));
  assert.equal(patient.local.address, netns.outerAddress, 'the relay is the gateway’s own');
  const dropped = Number(/counter packets (\d+)/.exec(nft('list', 'chain', 'inet', 'firewall', 'out'))?.[1] ?? 0);
  assert.ok(dropped > 0, 'the firewall saw (and dropped) the patient’s UDP attempts');
});

test('when TURN’s TCP port is blocked too, the page relays through TURN inside TLS', { skip }, async () => {
  nft('add', 'rule', 'inet', 'firewall', 'out', 'tcp', 'dport', String(turnTcp), 'counter', 'drop');
  const patient = await visit('TURN over TLS');
  assert.equal(patient.local.type, 'relay', JSON.stringify(patient));
  assert.equal(patient.local.relayProtocol, 'tls', JSON.stringify(patient));
});
