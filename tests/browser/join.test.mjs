// End-to-end: the real gateway binary, two headless Chromium pages with fake camera and microphone, the
// join page, and real media through the SFU. Run with `node --test tests/browser/` after
// `cargo build --workspace --bins` (GATEWAY_BIN overrides the binary's path, e.g. a release build).
//
// What it checks, in order (the tests share one server and one browser, so they run sequentially):
//   a garbage meeting id shows the invalid-link message;
//   two people join, each decodes the other's video and receives audio, both see "2 participants";
//   mute and video toggles reach the other side; switching the microphone mid-call keeps audio flowing;
//   one leaves, the other sees 1 participant and the remote tile goes away;
//   delete-meeting ends the session for the one still there;
//   SIGTERM stops the server within a few seconds, and its output holds no names, API key or tokens.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { artifacts, eventually, sleep } from './harness.mjs';

const NAMES = { a: 'Dr. Smith', b: 'Pat Client' };
const apiKey = randomBytes(24).toString('base64url').slice(0, 32);

/** Everything that must never appear in the server's output. */
const secrets = new Set([apiKey]);

let tmp;
let server; // { proc, output(), exited: Promise<{code, signal}>, baseUrl }
let baseUrl;
let browser;
let meeting; // { id, link }
const pages = {}; // a, b → Page
const pageConsole = [];

// ---- helpers ------------------------------------------------------------------------------------------------

const api = (body, { key = apiKey } = {}) => h.api(baseUrl, body, key);

async function openPage(name) {
  const page = await h.openPage(browser, baseUrl, name, pageConsole);
  // Collect every JoinToken the API hands out, to prove none of them reaches the server's logs.
  page.on('response', async (res) => {
    if (!res.url().endsWith('/api/aws-chime-video')) return;
    try {
      const json = await res.json();
      if (json?.attendee?.JoinToken) secrets.add(json.attendee.JoinToken);
    } catch {
      /* not JSON */
    }
  });
  return page;
}

const inboundStats = h.inboundStats;

const participantCount = (page) => page.getByTestId('participant-count').getAttribute('data-count');

// ---- setup / teardown ---------------------------------------------------------------------------------------

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-browser-'));
  server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local' });
  baseUrl = server.baseUrl;
  browser = await h.launchBrowser();
});

after(() => h.teardown({ browser, server, tmp, pageConsole }));

// ---- tests --------------------------------------------------------------------------------------------------

test('a link with a garbage meeting id shows the invalid-link message', async () => {
  const page = await openPage('garbage');
  await page.goto(`${baseUrl}/telehealth-aws.html?meeting=not-a-meeting&invite=x`);
  await page.getByRole('heading', { name: 'This link is invalid' }).waitFor({ timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__telehealth.state), 'error');
  assert.equal(await page.getByRole('button', { name: 'Join' }).count(), 0);
  await page.context().close();
});

test('create-meeting returns a join link for the page', async () => {
  const { status, json } = await api({ action: 'create-meeting', externalMeetingId: 'browser-test-1' });
  assert.equal(status, 200, JSON.stringify(json));
  assert.equal(json.success, true);
  assert.match(json.link, /^\/telehealth-aws\.html\?meeting=[0-9a-f-]{36}/i);
  const invite = new URL(json.link, baseUrl).searchParams.get('invite');
  if (invite) secrets.add(invite);
  meeting = { id: json.meeting.MeetingId, link: json.link };
});

test('two participants join, see and hear each other, and both count 2', async () => {
  assert.ok(meeting, 'needs the meeting from the previous test');
  for (const key of ['a', 'b']) {
    const page = await openPage(key);
    await page.goto(baseUrl + meeting.link);
    await page.getByLabel('Your name').fill(NAMES[key]);
    pages[key] = page;
  }
  // Wait until both previews run, so the timing below measures joining, not camera start-up.
  for (const page of Object.values(pages)) {
    await eventually(() => page.evaluate(() => document.getElementById('preview-video').readyState >= 2), {
      what: 'local camera preview',
    });
  }

  const clickedAt = {};
  const firstFrameMs = {};
  await Promise.all(
    Object.entries(pages).map(async ([key, page]) => {
      clickedAt[key] = Date.now();
      await page.getByRole('button', { name: 'Join' }).click();
      await eventually(async () => (await inboundStats(page))?.framesDecoded > 0, {
        interval: 25,
        what: `page ${key}: first remote video frame`,
      });
      firstFrameMs[key] = Date.now() - clickedAt[key];
    }),
  );
  for (const key of Object.keys(pages)) console.log('click-to-first-remote-frame ms', `page ${key}`, firstFrameMs[key]);

  for (const [key, page] of Object.entries(pages)) {
    assert.equal(await page.evaluate(() => window.__telehealth.state), 'joined', `page ${key} state`);
    // Video keeps decoding and audio keeps arriving: sample, wait, sample again.
    const first = await inboundStats(page);
    await eventually(
      async () => {
        const now = await inboundStats(page);
        return now.framesDecoded > first.framesDecoded + 5 && now.audioPackets > first.audioPackets + 10 && now;
      },
      { what: `page ${key}: framesDecoded and audio packetsReceived growing` },
    );
    await eventually(async () => (await participantCount(page)) === '2', { what: `page ${key}: participant count 2` });
    assert.match(await page.getByTestId('participant-count').innerText(), /^2 participants$/);
    assert.ok(await page.getByText('DEMO MODE').isVisible(), `page ${key}: DEMO MODE banner visible`);
    // One remote tile, labelled with the other person's name.
    const other = key === 'a' ? NAMES.b : NAMES.a;
    await eventually(async () => (await page.locator('.tile--remote').count()) === 1, { what: `page ${key}: one remote tile` });
    assert.equal(await page.locator('.tile--remote .tile-name').innerText(), other);
    // Both came through the invite link: guests, so neither tile says "Clinician".
    assert.equal(await page.locator('.tile--remote .tile-role').isVisible(), false, `page ${key}: no Clinician label`);
    await page.waitForTimeout(300); // let button transitions settle before the picture
    await page.screenshot({ path: path.join(artifacts, `in-call-${key}.png`) });
  }

  // The phone-sized layout, in call.
  await pages.b.setViewportSize({ width: 375, height: 740 });
  await pages.b.waitForTimeout(500);
  await pages.b.screenshot({ path: path.join(artifacts, 'in-call-b-phone-375x740.png') });
  const overflow = await pages.b.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scrolling at 375 px');
  await pages.b.setViewportSize({ width: 1280, height: 800 });
});

test('mute and stop video toggle their labels and reach the other side', async () => {
  const { a, b } = pages;
  assert.ok(a && b, 'needs both pages in call');
  await b.getByRole('button', { name: 'Mute' }).click();
  await b.getByRole('button', { name: 'Unmute' }).waitFor();
  assert.equal(await b.getByRole('button', { name: 'Unmute' }).getAttribute('aria-pressed'), 'true');
  await b.getByRole('button', { name: 'Stop video' }).click();
  await b.getByRole('button', { name: 'Start video' }).waitFor();
  await eventually(() => a.locator('.tile--remote.tile--audio-muted.tile--video-off').count(), {
    timeout: 10_000,
    what: "page a: the patient's tile shows muted and camera off",
  });
  await b.getByRole('button', { name: 'Unmute' }).click();
  await b.getByRole('button', { name: 'Start video' }).click();
  await b.getByRole('button', { name: 'Mute' }).waitFor();
  await b.getByRole('button', { name: 'Stop video' }).waitFor();
  await eventually(async () => (await a.locator('.tile--remote.tile--audio-muted').count()) === 0, {
    timeout: 10_000,
    what: 'page a: unmuted again',
  });
});

test('switching the microphone during the call keeps the audio reaching the other side', async () => {
  const { a, b } = pages;
  assert.ok(a && b, 'needs both pages in call');
  await b.getByText('Camera and microphone').click();
  const mics = b.getByTestId('microphone-select');
  const options = await mics.locator('option').allTextContents();
  assert.ok(options.length >= 2, `the fake devices offer several microphones: ${options}`);
  const before = await mics.inputValue();
  const other = await mics.locator('option').evaluateAll((os, cur) => os.map((o) => o.value).find((v) => v !== cur), before);
  await mics.selectOption(other);
  await eventually(async () => (await mics.inputValue()) === other, { what: 'page b: the new microphone selected' });
  const track = () => b.evaluate(() => window.__telehealth.pc.getSenders().find((s) => s.track?.kind === 'audio')?.track?.getSettings().deviceId);
  await eventually(async () => (await track()) === other, { what: 'page b: the peer connection sends the new microphone' });
  const start = await inboundStats(a);
  await eventually(async () => (await inboundStats(a)).audioPackets > start.audioPackets + 25, {
    what: 'page a: audio still arriving after the switch',
  });
  assert.ok(await b.getByRole('button', { name: 'Mute' }).isVisible(), 'still unmuted');
});

test('when one leaves, the other sees 1 participant and the remote tile disappears', async () => {
  const { a, b } = pages;
  assert.ok(a && b, 'needs both pages in call');
  await b.getByRole('button', { name: 'Leave' }).click();
  await b.getByRole('heading', { name: 'You left the session' }).waitFor({ timeout: 10_000 });
  assert.ok(await b.getByRole('button', { name: 'Rejoin' }).isVisible());
  assert.equal(await b.evaluate(() => window.__telehealth.state), 'left');
  await eventually(async () => (await participantCount(a)) === '1', { what: 'page a: participant count 1' });
  await eventually(async () => (await a.locator('.tile--remote').count()) === 0, { what: 'page a: remote tile removed' });
  await a.screenshot({ path: path.join(artifacts, 'after-leave-a.png') });
  await b.screenshot({ path: path.join(artifacts, 'after-leave-b.png') });
});

test('delete-meeting ends the session for the page still in it', async () => {
  const { a } = pages;
  assert.ok(a && meeting, 'needs page a in call');
  const { status, json } = await api({ action: 'delete-meeting', meetingId: meeting.id });
  assert.equal(status, 200, JSON.stringify(json));
  assert.equal(json.success, true);
  await a.getByRole('heading', { name: 'The session has ended' }).waitFor({ timeout: 10_000 });
  assert.equal(await a.evaluate(() => window.__telehealth.state), 'ended');
  await a.screenshot({ path: path.join(artifacts, 'session-ended-a.png') });
});

test('SIGTERM stops the server within a few seconds, and its output holds no names, API key or tokens', async () => {
  assert.ok(secrets.size >= 3, `expected the API key and two JoinTokens, collected ${secrets.size} secrets`);
  const started = Date.now();
  server.proc.kill('SIGTERM');
  const result = await Promise.race([server.exited, sleep(8_000).then(() => null)]);
  assert.ok(result, 'the gateway did not exit within 8 s of SIGTERM');
  console.log('sigterm-to-exit ms', Date.now() - started, 'exit', JSON.stringify(result));

  const output = server.output();
  assert.ok(output.includes('participant joined'), 'the gateway logged no joins at its default level');
  // Participants' addresses: Chrome also offers this machine's LAN addresses as ICE candidates.
  const lanIps = Object.values(os.networkInterfaces()).flat().filter((i) => i && !i.internal).map((i) => i.address);
  for (const ip of lanIps) assert.ok(!output.includes(ip), 'server output contains a participant IP address');
  for (const name of Object.values(NAMES)) assert.ok(!output.includes(name), `server output contains a participant name`);
  let i = 0;
  for (const secret of secrets) {
    assert.ok(!output.includes(secret), `server output contains secret #${i++} (API key, invite or JoinToken)`);
  }
  // The page's console must not carry tokens either.
  const consoleText = pageConsole.join('\n');
  for (const secret of secrets) assert.ok(!consoleText.includes(secret), 'a page logged a token to the console');
});
