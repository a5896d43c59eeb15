// RTC_SRTP_PROFILES=gcm: the SFU accepts only AES-GCM, so Chromium (which lists AES-CM + HMAC-SHA1 first and
// would get it otherwise) negotiates AES-GCM. Two pages see each other, both ends say which cipher protects the
// media: the page's transport stats and the gateway's /metrics.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { eventually } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);

let tmp;
let server;
let browser;
const pageConsole = [];

/** The SRTP cipher of the page's selected transport, as Chromium reports it (e.g. SRTP_AEAD_AES_256_GCM). */
const srtpCipher = (page) =>
  page.evaluate(async () => {
    const pc = window.__telehealth?.pc;
    if (!pc) return null;
    let cipher = null;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'transport' && s.srtpCipher) cipher = s.srtpCipher;
    });
    return cipher;
  });

/** `telehealth_sfu_srtp_connections_total` by profile label. */
async function profilesCounted(baseUrl) {
  const text = await (await fetch(baseUrl + '/metrics')).text();
  const counts = {};
  for (const m of text.matchAll(/^telehealth_sfu_srtp_connections_total\{profile="([^"]+)"\} (\d+)/gm)) counts[m[1]] = Number(m[2]);
  return counts;
}

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-srtp-'));
  server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local', RTC_SRTP_PROFILES: 'gcm' });
  browser = await h.launchBrowser();
});

after(() => h.teardown({ prefix: 'srtp-', browser, server, tmp, pageConsole }));

test('with RTC_SRTP_PROFILES=gcm, Chromium protects the visit with AES-GCM and both see each other', async () => {
  const { status, json } = await h.api(server.baseUrl, { action: 'create-meeting' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  const link = server.baseUrl + json.link;
  const pages = await h.preparePages(browser, server.baseUrl, link, ['Dr. Okafor', 'Pat Lindqvist'], pageConsole);
  await h.joinAll(pages);
  for (const page of pages) {
    await eventually(async () => (await h.liveStreams(page, 1000)).video.length >= 1, { timeout: 30_000, what: 'remote video decoding' });
    const cipher = await srtpCipher(page);
    assert.match(cipher ?? '', /^(SRTP_)?AEAD_AES_(128|256)_GCM$/, `the page's SRTP cipher: ${cipher}`);
  }
  const counts = await profilesCounted(server.baseUrl);
  const gcm = (counts.SRTP_AEAD_AES_128_GCM ?? 0) + (counts.SRTP_AEAD_AES_256_GCM ?? 0);
  assert.equal(gcm, 2, `connections by profile: ${JSON.stringify(counts)}`);
  assert.equal(counts.SRTP_AES128_CM_HMAC_SHA1_80 ?? 0, 0, JSON.stringify(counts));
});
