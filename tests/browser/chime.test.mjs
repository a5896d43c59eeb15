// The Chime path end to end: the real gateway binary in `auto` mode with AWS keys, its Chime backend pointed at
// the fake Chime SDK Meetings service (tests/fake-chime, through AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS), and headless
// Chromium opening a Chime meeting's link. The bundled amazon-chime-sdk-js must open its WebSocket to the meeting's
// MediaPlacement.SignalingUrl (the fake's, on 127.0.0.1); no request may leave the machine; there is no DEMO MODE
// banner; and since the fake never completes Chime's protocol, the page ends on a clear "could not connect" message.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { artifacts, eventually } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
// The fake's credentials (fake_chime::Credentials::default()), given to the gateway as real ones would be.
const AWS = {
  AWS_ACCESS_KEY_ID: 'AKIAFAKECHIMETEST0001',
  AWS_SECRET_ACCESS_KEY: 'fake-chime-secret-key-for-tests-only-000',
};
const NAME = 'Quincy Chime-Patient';

let tmp;
let fake;
let server;
let browser;
let page;
const requests = []; // every URL the page asked for, WebSockets included
const consoleLines = [];
const secrets = new Set([apiKey, AWS.AWS_SECRET_ACCESS_KEY]);

before(async () => {
  h.checkPrerequisites(h.fakeChimeBin);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-chime-'));
  fake = await h.startFakeChime();
  server = await h.startGateway(tmp, {
    TELEHEALTH_API_KEYS: apiKey,
    ...AWS,
    AWS_CHIME_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_CHIME_SDK_MEETINGS: fake.url,
  });
  browser = await h.launchBrowser();
});

after(async () => {
  fs.writeFileSync(path.join(artifacts, 'chime-page-console.log'), consoleLines.join('\n') + '\n');
  await page?.screenshot({ path: path.join(artifacts, 'chime-last.png') }).catch(() => {});
  await browser?.close().catch(() => {});
  for (const [p, name] of [
    [server, 'chime-server.log'],
    [fake, 'fake-chime.log'],
  ]) {
    if (!p) continue;
    fs.writeFileSync(path.join(artifacts, name), p.output());
    if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('a Chime meeting link runs the bundled amazon-chime-sdk-js against the meeting’s SignalingUrl', async () => {
  const { status, json } = await h.api(server.baseUrl, { action: 'create-meeting', appointmentId: 'chime-browser-1' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  assert.equal(json.provider, 'chime');
  assert.equal(json.demoMode, false);
  const meetingId = json.meeting.MeetingId;
  assert.match(json.meeting.MediaPlacement.SignalingUrl, /^ws:\/\/127\.0\.0\.1:\d+\/control\//);
  secrets.add(new URL(json.link, server.baseUrl).searchParams.get('invite'));

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: server.baseUrl });
  page = await context.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('websocket', (ws) => requests.push(ws.url()));
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('response', async (res) => {
    if (!res.url().endsWith('/api/aws-chime-video')) return;
    const body = await res.json().catch(() => null);
    if (body?.attendee?.JoinToken) secrets.add(body.attendee.JoinToken);
    if (body?.presence?.token) secrets.add(body.presence.token);
  });

  await page.goto(server.baseUrl + json.link);
  await page.getByLabel('Your name').fill(NAME);
  await eventually(() => page.evaluate(() => document.getElementById('preview-video').readyState >= 2), {
    what: 'local camera preview',
  });
  await page.getByRole('button', { name: 'Join' }).click();

  // The SDK reaches the fake's signaling endpoint for this meeting.
  const connection = await eventually(
    async () => (await fake.state()).signaling.find((c) => c.meetingId === meetingId),
    { timeout: 20_000, what: 'amazon-chime-sdk-js to open its signaling WebSocket' },
  );
  assert.match(connection.query, /X-Chime-Control-Protocol-Version=3/, JSON.stringify(connection));
  assert.ok(requests.some((u) => u.endsWith('/vendor/amazon-chime-sdk.js')), 'the bundle came from the gateway');
  assert.equal(await page.locator('#demo-banner').isVisible(), false, 'no DEMO MODE banner on a Chime meeting');
  await page.screenshot({ path: path.join(artifacts, 'chime-joining.png') });

  // The fake never answers Chime's join: the page says so clearly and offers to try again.
  await page.getByRole('heading', { name: 'Could not connect to the video service' }).waitFor({ timeout: 30_000 });
  assert.ok(await page.getByRole('button', { name: 'Rejoin' }).isVisible());
  await page.screenshot({ path: path.join(artifacts, 'chime-unreachable.png') });

  for (const url of requests) {
    // blob: URLs (the SDK's workers) belong to the page's own origin.
    const host = new URL(url.replace(/^blob:/, '')).hostname;
    assert.ok(['127.0.0.1', 'localhost'].includes(host), `the page contacted ${url}`);
  }
  const consoleText = consoleLines.join('\n');
  assert.ok(!consoleText.includes(NAME), 'the page logged the name');
  for (const secret of secrets) assert.ok(!consoleText.includes(secret), 'the page logged a token');
  await context.close();
});

test('the gateway’s output holds no names, AWS secrets, JoinTokens, presence tokens or invites', async () => {
  assert.ok(secrets.size >= 4, `collected ${secrets.size} secrets`);
  server.proc.kill('SIGTERM');
  await server.exited;
  const output = server.output();
  assert.ok(output.includes('meeting created'), 'the gateway logged at its default level');
  assert.ok(!output.includes(NAME) && !output.includes('Quincy'), 'server output contains the name');
  let i = 0;
  for (const secret of secrets) assert.ok(!output.includes(secret), `server output contains secret #${i++}`);
});
