// End-to-end: the practitioner console at `/` in headless Chromium against the real gateway binary.
// Run with `node --test tests/browser/console.test.mjs` after `cargo build --bin telehealth-gateway`.
//
// What it checks, in order (one server, one browser context, so the tests run sequentially):
//   signed out, `/` shows the sign-in form; a wrong key is refused with a message;
//   signing in with the key through the form: the session cookie is HttpOnly, SameSite=Strict, not readable
//   by scripts and not the key; the header names the clinic and its time zone;
//   the New Appointment form opens and closes with the keyboard alone, every field is labelled, the Modality
//   select has exactly "In-Person" and "Telehealth (Video)", focus returns to the button;
//   with /api/appointments and /api/outbox STUBBED in the page (they are being built in another tree): a date
//   and time typed in the clinic's zone are sent as the right UTC instant with the CSRF token, the row shows the
//   link, Join opens the real join page with the practitioner's name filled in, Retry posts to the outbox;
//   the Usage tab calls get-usage through the session;
//   Sign out returns to the form and the old cookie is dead; the banner's one-time link signs in once;
//   the server's output holds neither the key nor a client's name.
//   through the real API: scheduling by the form, Join into the visit, the confirmation email's link (a real
//   SMTP server) opened by a second browser, both decoding each other's video.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './harness.mjs';
import { artifacts, eventually } from './harness.mjs';

const apiKey = randomBytes(24).toString('base64url').slice(0, 32);
const CLINIC = { name: 'Harbour Street Clinic', zone: 'America/New_York' };
const CLIENT = { name: 'Quentin Zebedee-Client', email: 'quentin@example.org', phone: '+15551234567' };
const PRACTITIONER = 'Dr. Ada Smith';

let tmp;
let server;
let smtp;
let baseUrl;
let browser;
let context;
let page;
const pageConsole = [];
/** Links of appointments made here: they must never reach the server's output either. */
const scheduledLinks = [];

const SESSION_COOKIE = 'telehealth_console';
const sessionCookie = async () => (await context.cookies(baseUrl)).find((c) => c.name === SESSION_COOKIE);

/** Presses Tab until `id` has the focus (at most `max` presses): the keyboard-only way to reach a control. */
async function tabTo(id, max = 40) {
  for (let i = 0; i < max; i++) {
    if ((await page.evaluate(() => document.activeElement?.id)) === id) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached #${id}`);
}

const activeId = () => page.evaluate(() => document.activeElement?.id || '');

before(async () => {
  h.checkPrerequisites();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'telehealth-console-'));
  smtp = await h.startSmtpSink(path.join(tmp, 'mail'));
  server = await h.startGateway(tmp, {
    SMTP_URL: smtp.url,
    SMTP_FROM: 'Harbour Street Clinic <noreply@clinic.example>',
    OUTBOX_POLL_MS: '200',
    TELEHEALTH_API_KEYS: apiKey,
    TELEHEALTH_PROVIDER: 'local',
    CLINIC_NAME: CLINIC.name,
    CLINIC_TIMEZONE: CLINIC.zone,
  });
  baseUrl = server.baseUrl;
  browser = await h.launchBrowser();
  // The tablet is set to another zone than the clinic's: everything shown and typed must still be New York time.
  context = await browser.newContext({ viewport: { width: 1024, height: 768 }, timezoneId: 'Asia/Tokyo', hasTouch: true });
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: baseUrl });
  page = await context.newPage();
  page.on('console', (m) => pageConsole.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => pageConsole.push(`pageerror: ${e.message}`));
});

after(async () => {
  smtp?.proc.kill('SIGKILL');
  await h.teardown({ prefix: 'console-', browser, server, tmp, pageConsole });
});

test('signed out, the console shows the sign-in form and refuses a wrong key with a message', async () => {
  await page.goto(`${baseUrl}/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 10_000 });
  const key = page.getByLabel('API key');
  assert.equal(await key.getAttribute('type'), 'password');
  assert.equal(await activeId(), 'api-key', 'the key field has the focus');
  await key.fill('not-the-right-key-0000');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor({ timeout: 5_000 });
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'signed-out');
  assert.equal(await sessionCookie(), undefined);
});

test('signing in through the form sets an HttpOnly, SameSite=Strict cookie scripts cannot read', async () => {
  await page.getByLabel('API key').fill(apiKey);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Upcoming appointments' }).waitFor({ timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__console.state), 'signed-in');
  assert.equal(await page.getByLabel('API key').inputValue(), '', 'the key is not left in the page');

  const cookie = await sessionCookie();
  assert.ok(cookie, 'a session cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/');
  assert.equal(cookie.secure, false, 'plain-HTTP loopback');
  assert.ok(cookie.expires > Date.now() / 1000 + 11 * 3600, 'lives about 12 hours');
  assert.ok(!cookie.value.includes(apiKey), 'the cookie does not carry the key');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes(SESSION_COOKIE), 'document.cookie does not expose it');

  const header = await page.locator('header').innerText();
  assert.ok(header.includes(CLINIC.name), header);
  assert.ok(header.includes(CLINIC.zone), header);
  assert.ok(await page.getByRole('button', { name: 'Sign out' }).isVisible());
  await page.screenshot({ path: path.join(artifacts, 'console-signed-in.png') });
});

test('the New Appointment form opens with the keyboard alone, is fully labelled, and gives focus back on Escape', async () => {
  await tabTo('new-appointment');
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'New Appointment' });
  await dialog.waitFor({ timeout: 5_000 });
  assert.equal(await activeId(), 'f-client-name', 'focus moves into the dialog');

  const labels = {
    'Client name': 'f-client-name',
    'Client email': 'f-client-email',
    'Client phone': 'f-client-phone',
    Date: 'f-date',
    Time: 'f-time',
    'Duration (minutes)': 'f-duration',
    Practitioner: 'f-practitioner',
    Modality: 'f-modality',
  };
  for (const [label, id] of Object.entries(labels)) {
    assert.equal(await dialog.getByLabel(label, { exact: true }).getAttribute('id'), id, `label "${label}"`);
  }
  const options = await dialog.getByLabel('Modality').locator('option').evaluateAll((os) => os.map((o) => [o.value, o.textContent]));
  assert.deepEqual(options, [['in-person', 'In-Person'], ['telehealth', 'Telehealth (Video)']]);
  assert.match(await page.locator('#f-client-phone-hint').innerText(), /E\.164/);
  assert.ok((await page.locator('#f-when-hint').innerText()).includes(CLINIC.zone), 'the form says which zone the time is in');
  assert.equal(await page.getByLabel('Duration (minutes)').getAttribute('min'), '5');
  assert.equal(await page.getByLabel('Duration (minutes)').getAttribute('max'), '480');

  await page.keyboard.press('Tab');
  assert.equal(await activeId(), 'f-client-email', 'Tab moves through the form in order');
  await page.screenshot({ path: path.join(artifacts, 'console-new-appointment.png') });
  await page.keyboard.press('Escape');
  await eventually(async () => !(await dialog.isVisible()), { what: 'the dialog to close' });
  await eventually(async () => (await activeId()) === 'new-appointment', { what: 'focus back on New Appointment' });
});

test('(API stubbed) a clinic-zone time is sent as UTC with the CSRF token, the row shows the link, Join pre-fills the name, Retry posts', async () => {
  // A real meeting, so Join opens a working join page.
  const { json: meeting } = await h.api(baseUrl, { action: 'create-meeting' }, apiKey);
  const link = `${baseUrl}${meeting.link}`;
  const seen = { posts: [], retries: [] };
  let appointments = [];
  const now = new Date().toISOString();
  await page.route(/\/api\/appointments(\?.*)?$/, async (route) => {
    const req = route.request();
    if (req.method() === 'POST') {
      const body = req.postDataJSON();
      seen.posts.push({ body, headers: req.headers() });
      const a = {
        id: 'appt-1', ...body, telehealth_room_id: meeting.meeting.MeetingId, telehealth_link: link,
        status: 'scheduled', created_at: now, updated_at: now,
      };
      appointments = [a];
      return route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify({ success: true, appointment: a }) });
    }
    return route.fulfill({ contentType: 'application/json', body: JSON.stringify({ success: true, appointments }) });
  });
  await page.route(/\/api\/outbox(\/.*)?(\?.*)?$/, async (route) => {
    const req = route.request();
    const m = {
      id: 'msg-1', appointment_id: 'appt-1', kind: 'confirmation', channel: 'sms', recipient: CLIENT.phone, state: 'failed',
      attempts: 3, not_before: now, next_attempt_at: null, sent_at: null, last_error: 'provider refused', created_at: now,
    };
    if (req.method() === 'POST') {
      seen.retries.push({ url: req.url(), headers: req.headers() });
      return route.fulfill({ contentType: 'application/json', body: JSON.stringify({ success: true, message: { ...m, state: 'pending' } }) });
    }
    return route.fulfill({ contentType: 'application/json', body: JSON.stringify({ success: true, messages: [m] }) });
  });

  await page.getByRole('button', { name: 'New Appointment' }).click();
  const dialog = page.getByRole('dialog', { name: 'New Appointment' });
  await dialog.getByLabel('Client name').fill(CLIENT.name);
  await dialog.getByLabel('Client email').fill(CLIENT.email);
  await dialog.getByLabel('Client phone').fill(CLIENT.phone);
  // 1 November 2026, 01:30 in New York happens twice (clocks go back at 02:00): the form says so and sends the
  // first, 05:30 UTC; the tablet itself is on Tokyo time.
  await dialog.getByLabel('Date').fill('2026-11-01');
  await dialog.getByLabel('Time').fill('01:30');
  await page.locator('#f-when-note').filter({ hasText: 'happens twice' }).waitFor({ timeout: 5_000 });
  await dialog.getByLabel('Duration (minutes)').fill('45');
  await dialog.getByLabel('Practitioner').fill(PRACTITIONER);
  await dialog.getByLabel('Modality').selectOption('telehealth');
  await dialog.getByRole('button', { name: 'Save Appointment' }).click();
  await eventually(() => seen.posts.length === 1, { what: 'POST /api/appointments' });

  const [{ body, headers }] = seen.posts;
  assert.deepEqual(body, {
    client_name: CLIENT.name, client_email: CLIENT.email, client_phone: CLIENT.phone, start_time: '2026-11-01T05:30:00Z',
    duration_minutes: 45, modality: 'telehealth', practitioner: PRACTITIONER,
  });
  assert.equal(headers['content-type'], 'application/json');
  assert.ok(headers['x-csrf-token']?.length >= 32, 'the CSRF token is sent');

  const row = page.locator('li.appt', { hasText: CLIENT.name });
  await row.waitFor({ timeout: 5_000 });
  assert.equal(await row.locator('input.link-input').inputValue(), link);
  const rowText = await row.innerText();
  assert.ok(rowText.includes('1:30') && rowText.includes('Telehealth (Video)') && rowText.includes(PRACTITIONER), rowText);
  assert.ok((await page.locator('.day-heading').first().innerText()).includes('November 1'), 'grouped under the clinic-zone day');
  await page.screenshot({ path: path.join(artifacts, 'console-appointments.png') });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: path.join(artifacts, 'console-appointments-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1024, height: 768 });

  await row.getByRole('button', { name: /^Copy link/ }).click();
  await page.getByRole('status').filter({ hasText: 'Link copied' }).waitFor({ timeout: 5_000 });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);

  const [visit] = await Promise.all([context.waitForEvent('page'), row.getByRole('button', { name: /^Join/ }).click()]);
  await visit.waitForLoadState('domcontentloaded');
  assert.ok(visit.url().startsWith(`${link}&name=`), visit.url());
  await eventually(async () => (await visit.locator('#name-input').inputValue()) === PRACTITIONER, { what: 'the join page pre-fills the name' });
  await visit.close();

  // Cancel asks first; "Keep appointment" has the focus so Enter does not cancel by accident.
  await row.getByRole('button', { name: /^Cancel/ }).click();
  await page.getByRole('dialog', { name: 'Cancel this appointment?' }).waitFor();
  assert.equal(await activeId(), 'confirm-no');
  await page.keyboard.press('Escape');

  await page.getByRole('tab', { name: 'Messages' }).click();
  const msg = page.locator('#outbox-rows tr', { hasText: CLIENT.phone });
  await msg.waitFor({ timeout: 5_000 });
  assert.ok((await msg.innerText()).includes('provider refused'));
  await msg.getByRole('button', { name: /^Retry/ }).click();
  await eventually(() => seen.retries.length === 1, { what: 'POST /api/outbox/msg-1/retry' });
  assert.ok(seen.retries[0].url.endsWith('/api/outbox/msg-1/retry'));
  assert.ok(seen.retries[0].headers['x-csrf-token']?.length >= 32);
  await page.screenshot({ path: path.join(artifacts, 'console-outbox.png') });

  await page.unroute(/\/api\/appointments(\?.*)?$/);
  await page.unroute(/\/api\/outbox(\/.*)?(\?.*)?$/);
  await page.getByRole('tab', { name: 'Appointments' }).click();
});

test('the Usage tab reads get-usage through the session, with the CSRF token', async () => {
  const calls = [];
  const onRequest = (req) => {
    if (req.url().endsWith('/api/aws-chime-video')) calls.push({ body: req.postDataJSON(), headers: req.headers() });
  };
  page.on('request', onRequest);
  // Keyboard: arrows move between tabs.
  await page.getByRole('tab', { name: 'Appointments' }).focus();
  await page.keyboard.press('ArrowLeft');
  assert.equal(await activeId(), 'tab-usage');
  await page.getByRole('heading', { name: 'Video usage' }).waitFor({ timeout: 5_000 });
  await eventually(() => calls.length >= 1, { what: 'the get-usage call' });
  page.off('request', onRequest);
  assert.equal(calls[0].body.action, 'get-usage');
  assert.ok(calls[0].headers['x-csrf-token']?.length >= 32);
  assert.equal(calls[0].headers.authorization, undefined, 'the page holds no key');
  await eventually(async () => (await page.locator('#usage-empty').isVisible()) || (await page.locator('#usage-rows tr').count()) > 0, {
    what: 'the usage table or its empty note',
  });
  assert.ok(!(await page.locator('#usage-error').isVisible()), await page.locator('#usage-error').innerText());
  await page.getByRole('tab', { name: 'Appointments' }).click();
});

test('signing out returns to the sign-in form and the old cookie no longer works', async () => {
  const before = await sessionCookie();
  assert.ok(before);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 5_000 });
  assert.equal(await sessionCookie(), undefined, 'the browser dropped the cookie');
  const replay = await fetch(`${baseUrl}/console/session`, { headers: { cookie: `${SESSION_COOKIE}=${before.value}` } });
  assert.equal(replay.status, 401, 'the session is revoked on the server');
});

test("the start-up banner's one-time link signs in once, then says it was used", async () => {
  const link = server.output().match(/(http:\/\/\S+\/console\/login\?token=\S+)/)?.[1];
  assert.ok(link, 'the banner prints a sign-in link');
  await page.goto(link);
  await page.getByRole('heading', { name: 'Upcoming appointments' }).waitFor({ timeout: 10_000 });
  assert.equal(new URL(page.url()).pathname, '/');
  await page.goto(link);
  await page.getByRole('heading', { name: /already used or has expired/ }).waitFor({ timeout: 5_000 });
  await page.goto(`${baseUrl}/`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor({ timeout: 5_000 });
});

/** Inbound video frames decoded by a join page's peer connection. */
const framesDecoded = (p) =>
  p.evaluate(async () => {
    const pc = window.__telehealth?.pc;
    if (!pc) return 0;
    let n = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0;
    });
    return n;
  });

test('scheduling through the form makes a visit: Join leads the practitioner in, the emailed link the patient, and they see each other', async () => {
  await page.goto(`${baseUrl}/`);
  await page.getByLabel('API key').fill(apiKey);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Upcoming appointments' }).waitFor({ timeout: 10_000 });
  // Tomorrow in the clinic's zone, 10:00.
  const tomorrow = await page.evaluate(async (zone) => {
    const ct = await import('/js/clinic-time.js');
    return ct.addDays(ct.dayKey(Date.now(), zone), 1);
  }, CLINIC.zone);
  await page.getByRole('button', { name: 'New Appointment' }).click();
  const dialog = page.getByRole('dialog', { name: 'New Appointment' });
  await dialog.getByLabel('Client name').fill(CLIENT.name);
  await dialog.getByLabel('Client email').fill(CLIENT.email);
  await dialog.getByLabel('Client phone').fill(CLIENT.phone);
  await dialog.getByLabel('Date').fill(tomorrow);
  await dialog.getByLabel('Time').fill('10:00');
  await dialog.getByLabel('Duration (minutes)').fill('30');
  await dialog.getByLabel('Practitioner').fill(PRACTITIONER);
  await dialog.getByLabel('Modality').selectOption('telehealth');
  await dialog.getByRole('button', { name: 'Save Appointment' }).click();
  const row = page.locator('li.appt', { hasText: CLIENT.name });
  await row.waitFor({ timeout: 10_000 });
  const link = await row.locator('input.link-input').inputValue();
  assert.match(link, /\/telehealth-aws\.html\?meeting=[0-9a-f-]{36}&invite=/);
  scheduledLinks.push(link);
  const [visit] = await Promise.all([context.waitForEvent('page'), row.getByRole('button', { name: /^Join/ }).click()]);
  await eventually(async () => (await visit.locator('#name-input').inputValue()) === PRACTITIONER, { what: 'the name pre-filled' });
  await visit.getByRole('button', { name: 'Join' }).click();
  await eventually(() => visit.evaluate(() => window.__telehealth.state === 'joined'), { what: 'the practitioner joined the visit' });

  // The patient's confirmation arrives by email (a real SMTP server) with the same link.
  const mail = await eventually(
    () => smtp.messages().find((m) => m.includes(`To: ${CLIENT.email}`) && m.includes('Subject: Appointment Confirmation')),
    { timeout: 15_000, what: 'the confirmation email' },
  );
  const emailed = h.readMail(mail).body.match(/https?:\/\/\S+\/telehealth-aws\.html\?meeting=\S+/)?.[0];
  assert.equal(emailed, link, 'the email carries the row\'s link');
  const patientContext = await browser.newContext({ viewport: { width: 800, height: 600 } });
  await patientContext.grantPermissions(['camera', 'microphone'], { origin: baseUrl });
  const patient = await patientContext.newPage();
  await patient.goto(emailed);
  await patient.locator('#name-input').fill(CLIENT.name);
  await patient.getByRole('button', { name: 'Join' }).click();
  for (const [who, p] of [['practitioner', visit], ['patient', patient]]) {
    await eventually(async () => (await framesDecoded(p)) > 10, { timeout: 30_000, what: `the ${who} to decode the other's video` });
  }
  // Joined from the console, the practitioner is the host: the patient's page labels that tile "Clinician"
  // (beside the name, which stays as given); the patient, who came through the link, is a guest.
  await eventually(() => patient.locator('.tile--remote .tile-role').isVisible(), { what: "the practitioner's Clinician label" });
  assert.equal(await patient.locator('.tile--remote .tile-role').innerText(), 'Clinician');
  assert.equal(await patient.locator('.tile--remote .tile-name').innerText(), PRACTITIONER);
  assert.equal(await visit.locator('.tile--remote .tile-role').isVisible(), false, 'the patient has no Clinician label');
  await patientContext.close();
  await visit.close();
  // Cancelling through the confirmation removes it from the scheduled list.
  await row.getByRole('button', { name: /^Cancel/ }).click();
  await page.getByRole('dialog', { name: 'Cancel this appointment?' }).getByRole('button', { name: 'Cancel appointment' }).click();
  await eventually(async () => (await page.locator('li.appt', { hasText: CLIENT.name }).count()) === 0, { what: 'the row to go' });
});

test("the server's output holds neither the API key nor the client's details", async () => {
  const output = server.output();
  assert.ok(!output.includes(apiKey), 'server output contains the API key');
  for (const value of Object.values(CLIENT)) assert.ok(!output.includes(value), 'server output contains client data');
  assert.ok(scheduledLinks.length > 0, 'an appointment was made, so there was a link to leak');
  for (const link of scheduledLinks) {
    assert.ok(!output.includes(link) && !output.includes(new URL(link).searchParams.get('invite')), 'server output contains a join link');
  }
  assert.ok(!pageConsole.join('\n').includes(apiKey), 'the page logged the key');
});
