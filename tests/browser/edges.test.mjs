// The join page's edge cases (issue #10 item 7), each with the real gateway binary, headless Chromium with fake
// camera and microphone, and a practitioner's page already in the visit watching what the patient's page sends:
//
//   camera and microphone blocked by the browser (a browser WITHOUT --use-fake-ui-for-media-stream, its permissions
//   set through CDP as a person would in the site settings): the lobby says how to allow them, Try again re-asks,
//   allowing one is picked up by itself; the patient joins with what is allowed, sees and hears the practitioner,
//   and once the camera is allowed Try again sends it;
//   no camera or microphone at all: joins receive-only with a notice; one plugged in mid-visit is offered;
//   the microphone in use unplugged mid-visit: another one takes over; the only camera unplugged: the others see
//   "video off" instead of a frozen picture, and plugging it back in offers to turn it on;
//   the tab in the background: the visit goes on (pongs, media both ways) and paused videos play again on return;
//   Leave then Rejoin (twice, the second at once): one tile each, the right count, media both ways.
//
// Unplugging is simulated in the page (an init script, `window.__devices`): the device disappears from
// enumerateDevices and getUserMedia, its track stops and fires `ended` (what Chrome does on a real unplug; a page's
// own track.stop() fires nothing), and `devicechange` fires. Headless Chromium has no real background tab (every
// page stays "visible", even minimized or behind another tab), so the test overrides document.visibilityState
// and pauses the videos as a browser may.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { eventually, sleep } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
const DOCTOR = 'Dr. Okafor';
const PATIENT = 'Robin Quayle';

let tmp;
let server;
let baseUrl;
let browser; // prompts answered Allow (the harness default)
let strictBrowser; // permissions as a real browser keeps them
let link;
let doctor;
const pageConsole = [];

// ---- helpers ------------------------------------------------------------------------------------------------

/**
 * Runs in every patient page before its scripts: `window.__devices` unplugs and plugs back fake devices.
 * With `noDevices`, the page starts with none at all.
 */
function devicesHook({ noDevices }) {
  const md = navigator.mediaDevices;
  const realGetUserMedia = md.getUserMedia.bind(md);
  const realEnumerate = md.enumerateDevices.bind(md);
  const gone = new Set(); // device ids unplugged
  const goneKinds = new Set(noDevices ? ['audioinput', 'videoinput'] : []);
  const tracks = [];
  const isGone = (d) => gone.has(d.deviceId) || goneKinds.has(d.kind);
  const notFound = () => new DOMException('Requested device not found', 'NotFoundError');
  md.enumerateDevices = async () => (await realEnumerate()).filter((d) => !isGone(d));
  md.getUserMedia = async (constraints = {}) => {
    if (!gone.size && !goneKinds.size) {
      const stream = await realGetUserMedia(constraints);
      tracks.push(...stream.getTracks());
      return stream;
    }
    const all = await realEnumerate();
    const pick = (kind, want) => {
      if (!want) return want;
      const left = all.filter((d) => d.kind === kind && !isGone(d));
      const exact = typeof want === 'object' ? want.deviceId?.exact : undefined;
      if (!left.length || (exact && !left.some((d) => d.deviceId === exact))) throw notFound();
      // The default device is gone: the browser takes one that is still there.
      return exact ? want : { ...(typeof want === 'object' ? want : {}), deviceId: { exact: left[0].deviceId } };
    };
    const stream = await realGetUserMedia({
      audio: pick('audioinput', constraints.audio),
      video: pick('videoinput', constraints.video),
    });
    tracks.push(...stream.getTracks());
    return stream;
  };
  const changed = () => md.dispatchEvent(new Event('devicechange'));
  // Every remote tile the page ever shows, however briefly (a flash of a stray tile counts).
  window.__tilesShown = new Set();
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) if (n.classList?.contains('tile--remote')) window.__tilesShown.add(n.dataset.attendeeId);
    }
  }).observe(document, { childList: true, subtree: true });
  window.__devices = {
    /** Unplugs the device with this id: its live tracks end, as on a real unplug. */
    unplug(deviceId) {
      gone.add(deviceId);
      for (const t of tracks) {
        if (t.readyState === 'live' && t.getSettings().deviceId === deviceId) {
          t.stop();
          t.dispatchEvent(new Event('ended'));
        }
      }
      changed();
    },
    plugBack() {
      gone.clear();
      goneKinds.clear();
      changed();
    },
  };
}

const openPatients = new Set();

/** A patient page in its own context. `strict`: in the browser that keeps permissions; `permissions` set there. */
async function openPatient({ strict = false, permissions = null, noDevices = false } = {}) {
  // A test that failed may have left its patient in the visit: each test starts with the doctor alone.
  for (const old of openPatients) await patientGone(old);
  const b = strict ? strictBrowser : browser;
  const context = await b.newContext({ viewport: { width: 1280, height: 800 } });
  if (!strict) await context.grantPermissions(['camera', 'microphone'], { origin: baseUrl });
  await context.addInitScript(devicesHook, { noDevices });
  const page = await context.newPage();
  openPatients.add(page);
  page.on('console', (m) => pageConsole.push(`[patient] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageConsole.push(`[patient] pageerror: ${e.message}`));
  page.pongs = 0;
  page.on('websocket', (ws) => ws.on('framereceived', (f) => String(f.payload).includes('"pong"') && page.pongs++));
  if (permissions) await setPermissions(page, permissions);
  return page;
}

/**
 * What a person sets in the site settings: { camera: 'granted' | 'denied', microphone: … }. The CDP session stays
 * open with the page (the browser drops a session's permission overrides when it detaches).
 */
async function setPermissions(page, permissions) {
  page.cdp ??= await page.context().newCDPSession(page);
  const { targetInfo } = await page.cdp.send('Target.getTargetInfo');
  for (const [name, setting] of Object.entries(permissions)) {
    await page.cdp.send('Browser.setPermission', {
      permission: { name },
      setting,
      origin: baseUrl,
      browserContextId: targetInfo.browserContextId,
    });
  }
}

async function goToLobby(page) {
  await page.goto(link);
  await page.getByLabel('Your name').fill(PATIENT);
  // The first answer about camera and microphone (a stream, or a notice) has come.
  await eventually(() => page.evaluate(() => document.getElementById('preview-status').textContent !== 'Starting your camera…'), {
    what: 'the lobby to know about camera and microphone',
  });
}

const state = (page) => page.evaluate(() => window.__telehealth.state);
const count = (page) => page.getByTestId('participant-count').getAttribute('data-count');
const focused = (page) => page.evaluate(() => document.activeElement?.textContent?.trim() ?? null);
const patientTile = () => doctor.locator('.tile--remote');
const tileHas = async (cls) => (await patientTile().getAttribute('class')).split(/\s+/).includes(cls);
const senderDevice = (page, kind) =>
  page.evaluate((k) => window.__telehealth.pc?.getSenders().find((s) => s.track?.kind === k)?.track?.getSettings().deviceId ?? null, kind);

async function join(page) {
  await page.getByRole('button', { name: 'Join' }).click();
  await eventually(async () => (await state(page)) === 'joined', { what: 'the patient in the visit' });
}

/** Waits until `page` receives `video` growing remote videos and `audio` growing audio streams (at least). */
function receives(page, who, { video, audio }, timeout = 20_000) {
  const what = `${who}: ${video} remote video(s) decoding and ${audio} audio stream(s) arriving`;
  return h.receivesMedia(page, what, { video, audio, timeout, interval: 100 });
}

const tilesShown = (page) => page.evaluate(() => window.__tilesShown.size);

/** Both see each other: one tile each, a count of 2 on both, and the patient sees the doctor's video. */
async function together(page) {
  await eventually(async () => (await patientTile().count()) === 1 && (await page.locator('.tile--remote').count()) === 1, {
    what: 'one remote tile on each side',
  });
  await eventually(async () => (await count(doctor)) === '2' && (await count(page)) === '2', { what: 'both count 2' });
  assert.equal(await patientTile().locator('.tile-name').innerText(), PATIENT);
  assert.equal(await page.locator('.tile--remote .tile-name').innerText(), DOCTOR);
  await eventually(async () => (await page.locator('.tile--remote.tile--video-off').count()) === 0, {
    what: "the doctor's video shown on the patient's page",
  });
}

/** The patient leaves for good (closing the tab); the practitioner is alone again. */
async function patientGone(page) {
  openPatients.delete(page);
  await page.context().close();
  await eventually(async () => (await patientTile().count()) === 0 && (await count(doctor)) === '1', {
    what: "the doctor alone again (no patient tile, count 1)",
  });
}

// ---- setup / teardown ---------------------------------------------------------------------------------------

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-edges-'));
  server = await h.startGateway(tmp, { TELEHEALTH_API_KEYS: apiKey, TELEHEALTH_PROVIDER: 'local' });
  baseUrl = server.baseUrl;
  browser = await h.launchBrowser();
  strictBrowser = await h.launchBrowser({ fakeUi: false });
  const { status, json } = await h.api(baseUrl, { action: 'create-meeting' }, apiKey);
  assert.equal(status, 200, JSON.stringify(json));
  link = baseUrl + json.link;
  doctor = await h.openPage(browser, baseUrl, 'doctor', pageConsole);
  await h.prepareJoin(doctor, link, DOCTOR);
  await doctor.getByRole('button', { name: 'Join' }).click();
  await eventually(async () => (await state(doctor)) === 'joined', { what: 'the doctor in the visit' });
});

after(async () => {
  await strictBrowser?.close().catch(() => {});
  await h.teardown({ prefix: 'edges-', browser, server, tmp, pageConsole });
});

// ---- 1. permission denied -----------------------------------------------------------------------------------

let blocked; // the patient page of tests 1 and 2

test('camera and microphone blocked: the lobby says how to allow them, Try again re-asks, an allowed microphone is picked up by itself', async () => {
  blocked = await openPatient({ strict: true, permissions: { camera: 'denied', microphone: 'denied' } });
  await goToLobby(blocked);
  const notice = blocked.getByRole('status').filter({ hasText: 'blocking' });
  await notice.waitFor();
  assert.match(await notice.innerText(), /Your browser is blocking your camera and microphone, but you can still join to see and hear the others\./);
  assert.match(await notice.innerText(), /click the lock or camera icon beside the web address.*choose Allow, then press Try again/);
  assert.equal(await blocked.locator('#preview-status').innerText(), 'Camera off');
  assert.ok(
    await blocked.evaluate(() => document.activeElement?.id === 'name-input'),
    'the name field keeps the focus on load (the notice is announced, not focused)',
  );
  // Try again while still blocked: it says so, and the focus stays on Try again.
  await notice.getByRole('button', { name: 'Try again' }).click();
  await eventually(async () => /still blocking your camera and microphone/.test(await notice.innerText()), {
    what: 'the notice to say it is still blocked',
  });
  assert.equal(await focused(blocked), 'Try again');
  // The person allows the microphone in the site settings: the lobby takes it without a click.
  await setPermissions(blocked, { microphone: 'granted' });
  await eventually(async () => /blocking your camera, so the others will hear you but not see you/.test(await notice.innerText()), {
    what: 'the notice to be about the camera only',
  });
  assert.ok(await blocked.evaluate(() => document.getElementById('preview-video').srcObject?.getAudioTracks().length === 1));
  await blocked.screenshot({ path: path.join(h.artifacts, 'edges-lobby-camera-blocked.png') });
});

test('joined with the camera blocked: sees and hears the others, is heard with camera off; once allowed, Try again sends the video', async () => {
  assert.ok(blocked, 'needs the page of the previous test');
  await join(blocked);
  const alert = blocked.getByTestId('device-notice');
  assert.match(await alert.innerText(), /Your browser is blocking your camera, so the others will hear you but not see you\./);
  assert.equal(await alert.getAttribute('role'), 'alert');
  await together(blocked);
  await receives(blocked, 'patient', { video: 1, audio: 1 });
  await receives(doctor, 'doctor', { video: 0, audio: 1 });
  await eventually(() => tileHas('tile--video-off'), { what: "the doctor to see the patient's camera off" });
  assert.equal(await tileHas('tile--audio-muted'), false, 'the microphone works');
  assert.ok(await blocked.getByRole('button', { name: 'Start video' }).isDisabled());

  await setPermissions(blocked, { camera: 'granted' });
  const clicked = Date.now();
  await alert.getByRole('button', { name: 'Try again' }).click();
  await receives(doctor, 'doctor after Try again', { video: 1, audio: 1 });
  console.log(`camera allowed: the doctor decodes the patient's video ${Date.now() - clicked} ms after Try again`);
  await eventually(async () => !(await tileHas('tile--video-off')), { what: "the doctor to see the patient's video" });
  assert.equal(await alert.innerText(), '', 'no notice once everything works');
  assert.equal(await focused(blocked), 'Stop video', 'the focus goes to the camera control');
  await receives(blocked, 'patient after Try again', { video: 1, audio: 1 });
  await together(blocked);
  await patientGone(blocked);
});

// ---- 2. no devices ------------------------------------------------------------------------------------------

test('no camera or microphone at all: joins receive-only with a clear notice; one plugged in mid-visit is offered and sends', async () => {
  const page = await openPatient({ noDevices: true });
  await goToLobby(page);
  const status = page.getByTestId('media-notice');
  assert.match(await status.innerText(), /No camera or microphone was found, but you can still join to see and hear the others\./);
  assert.match(await status.innerText(), /Plug one in, then press Try again\./);
  await join(page);
  const alert = page.getByTestId('device-notice');
  assert.match(await alert.innerText(), /No camera or microphone was found, so the others cannot see or hear you\./);
  await together(page);
  await receives(page, 'patient', { video: 1, audio: 1 });
  assert.equal(await tilesShown(page), 1, 'only the doctor ever had a tile (no flash of a stray "Participant")');
  await eventually(async () => (await tileHas('tile--video-off')) && (await tileHas('tile--audio-muted')), {
    what: 'the doctor to see the patient with camera off and muted',
  });

  // A headset with a camera is plugged in: the page offers it (and does not switch it on unasked).
  await page.evaluate(() => window.__devices.plugBack());
  const offer = alert.getByRole('button', { name: 'Turn on camera and microphone' });
  await offer.waitFor();
  assert.match(await alert.innerText(), /A camera and a microphone were connected\./);
  assert.equal(await focused(page), 'Turn on camera and microphone');
  await offer.click();
  await receives(doctor, 'doctor after the devices were turned on', { video: 1, audio: 1 });
  await eventually(async () => !(await tileHas('tile--video-off')) && !(await tileHas('tile--audio-muted')), {
    what: 'the doctor to see the patient unmuted with video',
  });
  await receives(page, 'patient after turning devices on', { video: 1, audio: 1 });
  await together(page);
  await patientGone(page);
});

// ---- 3. a device unplugged mid-visit ------------------------------------------------------------------------

let unplugged; // the patient page of tests 3 and 4

test('the microphone in use is unplugged mid-visit: another one takes over and the others keep hearing', async () => {
  unplugged = await openPatient();
  await goToLobby(unplugged);
  await join(unplugged);
  await together(unplugged);
  await receives(doctor, 'doctor', { video: 1, audio: 1 });
  const mic = await senderDevice(unplugged, 'audio');
  assert.ok(mic, 'the patient sends a microphone');
  await unplugged.evaluate((id) => window.__devices.unplug(id), mic);
  const alert = unplugged.getByTestId('device-notice');
  await eventually(async () => /Your microphone was disconnected, so the visit now uses Fake Audio Input/.test(await alert.innerText()), {
    what: 'the patient told the microphone changed',
  });
  const now = await senderDevice(unplugged, 'audio');
  assert.ok(now && now !== mic, `the peer connection sends another microphone (${now})`);
  await eventually(async () => !(await tileHas('tile--audio-muted')), { what: 'the doctor sees the patient unmuted' });
  const start = await h.inboundStats(doctor);
  await eventually(async () => (await h.inboundStats(doctor)).audioPackets > start.audioPackets + 25, {
    what: "the doctor still receiving the patient's audio",
  });
  assert.equal(await unplugged.getByRole('button', { name: 'Mute' }).isEnabled(), true);
});

test('the only camera is unplugged mid-visit: the others see camera off, not a frozen picture; plugged back, it is offered and sends', async () => {
  assert.ok(unplugged, 'needs the page of the previous test');
  const camera = await senderDevice(unplugged, 'video');
  assert.ok(camera, 'the patient sends a camera');
  const at = Date.now();
  await unplugged.evaluate((id) => window.__devices.unplug(id), camera);
  await eventually(() => tileHas('tile--video-off'), { timeout: 5_000, what: "the doctor to see the patient's camera off" });
  console.log(`camera unplugged: the doctor sees "video off" after ${Date.now() - at} ms`);
  const alert = unplugged.getByTestId('device-notice');
  await eventually(async () => /Your camera was disconnected, so the others will hear you but not see you\./.test(await alert.innerText()), {
    what: 'the patient told the camera is gone',
  });
  assert.match(await alert.innerText(), /Plug it back in, then press Try again\./);
  assert.equal(await focused(unplugged), 'Try again');
  assert.ok(await unplugged.getByRole('button', { name: 'Start video' }).isDisabled());
  assert.equal(await tileHas('tile--audio-muted'), false, 'still heard');
  await unplugged.screenshot({ path: path.join(h.artifacts, 'edges-camera-unplugged.png') });

  await unplugged.evaluate(() => window.__devices.plugBack());
  const offer = alert.getByRole('button', { name: 'Turn on camera' });
  await offer.waitFor();
  assert.match(await alert.innerText(), /A camera was connected\./);
  assert.equal(await focused(unplugged), 'Turn on camera');
  await offer.click();
  await eventually(async () => !(await tileHas('tile--video-off')), { what: "the doctor to see the patient's video again" });
  await receives(doctor, 'doctor after the camera came back', { video: 1, audio: 1 });
  await together(unplugged);
  await patientGone(unplugged);
});

// ---- 4. background tab --------------------------------------------------------------------------------------

test('the tab in the background: the visit goes on, and the paused video plays again when the tab is back', async () => {
  const page = await openPatient();
  await goToLobby(page);
  await join(page);
  await together(page);
  await receives(page, 'patient', { video: 1, audio: 1 });
  const doctorEvents = await doctor.evaluate(() => window.__telehealth.events.length);
  // Hidden, and its videos paused (as a browser may do with a page nobody looks at).
  await page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    document.dispatchEvent(new Event('visibilitychange'));
    for (const v of document.querySelectorAll('video')) v.pause();
  });
  const pongs = page.pongs;
  await sleep(11_000); // past the page's pong timeout (12 s after the last pong) if pings had stopped
  assert.ok(page.pongs - pongs >= 2, `pings kept flowing in the background (${page.pongs - pongs} pongs in 11 s)`);
  assert.equal(await state(page), 'joined');
  await receives(page, 'patient in the background', { video: 1, audio: 1 }, 5_000);
  await receives(doctor, 'doctor while the patient is in the background', { video: 1, audio: 1 }, 5_000);
  const seen = await doctor.evaluate((from) => window.__telehealth.events.slice(from).map((e) => e.type), doctorEvents);
  assert.deepEqual(seen, [], 'the doctor saw no reconnect or leave');
  assert.equal(await page.evaluate(() => document.querySelector('.tile--remote video').paused), true);

  await page.evaluate(() => {
    delete document.visibilityState;
    delete document.hidden;
    document.dispatchEvent(new Event('visibilitychange'));
  });
  const playing = () =>
    page.evaluate(async () => {
      const v = document.querySelector('.tile--remote video');
      const t = v.currentTime;
      await new Promise((r) => setTimeout(r, 300));
      return !v.paused && v.currentTime > t;
    });
  await eventually(playing, { timeout: 5_000, what: "the doctor's video playing again on the patient's page" });
  assert.equal(await page.evaluate(() => document.getElementById('self-video').paused), false, 'the self view plays too');
  await together(page);
  await patientGone(page);
});

// ---- 5. Leave then Rejoin -----------------------------------------------------------------------------------

test('Leave then Rejoin, twice (the second at once): one tile each, a count of 2, media both ways', async () => {
  const page = await openPatient();
  await goToLobby(page);
  await join(page);
  await together(page);
  for (const round of [1, 2]) {
    await page.getByRole('button', { name: 'Leave' }).click();
    await page.getByRole('heading', { name: 'You left the session' }).waitFor();
    assert.equal(await focused(page), 'Rejoin', 'the focus is on Rejoin');
    if (round === 1) {
      await eventually(async () => (await patientTile().count()) === 0 && (await count(doctor)) === '1', {
        what: 'the doctor alone after the leave',
      });
    }
    const clicked = Date.now();
    await page.getByRole('button', { name: 'Rejoin' }).click();
    await eventually(async () => (await state(page)) === 'joined', { what: `round ${round}: the patient back in` });
    await receives(page, `patient, round ${round}`, { video: 1, audio: 1 });
    await receives(doctor, `doctor, round ${round}`, { video: 1, audio: 1 });
    console.log(`rejoin round ${round}: media both ways ${Date.now() - clicked} ms after Rejoin`);
    await together(page);
    // No stale tile shows up a moment later either.
    await sleep(1_500);
    assert.equal(await patientTile().count(), 1, `round ${round}: one patient tile on the doctor's page`);
    assert.equal(await page.locator('.tile--remote').count(), 1, `round ${round}: one remote tile on the patient's page`);
    assert.equal(await tileHas('tile--video-off'), false);
    assert.equal(await tilesShown(page), 1, `round ${round}: only the doctor ever had a tile on the patient's page`);
  }
  await patientGone(page);
  // Nothing about the people reached the pages' consoles.
  const text = pageConsole.join('\n');
  for (const name of [DOCTOR, PATIENT]) assert.ok(!text.includes(name), 'a page logged a participant name');
});
