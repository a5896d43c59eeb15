// The practitioner console at `/`: sign-in, upcoming appointments by day, the New Appointment / Edit form,
// cancelling, the outbox of client messages, and video usage.
//
// Every date and time a person reads or types is in the clinic's zone (`clinicTimezone` from
// GET /console/session), whatever zone the tablet is set to; the API speaks UTC (clinic-time.js converts).
// Nothing about clients is written to the browser console or to storage; the only thing remembered locally is
// the practitioner name last typed, to prefill the next form.
//
// For tests: document.body.dataset.state and window.__console.state are 'loading' | 'signed-out' | 'signed-in'.

import * as api from './console-api.js';
import { ConsoleApiError } from './console-api.js';
import * as ct from './clinic-time.js';

const $ = (id) => document.getElementById(id);
const el = {
  clinicName: $('clinic-name'),
  zoneNote: $('zone-note'),
  zoneName: $('zone-name'),
  signOut: $('sign-out'),
  status: $('status'),
  main: $('main'),
  loading: $('screen-loading'),
  signin: $('screen-signin'),
  console: $('screen-console'),
  signinForm: $('signin-form'),
  apiKey: $('api-key'),
  signinError: $('signin-error'),
  signinButton: $('signin-button'),
  tabs: [...document.querySelectorAll('[role="tab"]')],
  appointmentsTitle: $('appointments-title'),
  newAppointment: $('new-appointment'),
  rangeSelect: $('range-select'),
  includeCancelled: $('include-cancelled'),
  refreshAppointments: $('refresh-appointments'),
  appointmentsError: $('appointments-error'),
  appointments: $('appointments'),
  outboxState: $('outbox-state'),
  refreshOutbox: $('refresh-outbox'),
  outboxError: $('outbox-error'),
  outboxRows: $('outbox-rows'),
  outboxEmpty: $('outbox-empty'),
  usageForm: $('usage-form'),
  usageFrom: $('usage-from'),
  usageTo: $('usage-to'),
  usageError: $('usage-error'),
  usageRows: $('usage-rows'),
  usageTotals: $('usage-totals'),
  usageEmpty: $('usage-empty'),
  dialog: $('appointment-dialog'),
  dialogTitle: $('appointment-dialog-title'),
  form: $('appointment-form'),
  formError: $('form-error'),
  fClientName: $('f-client-name'),
  fClientEmail: $('f-client-email'),
  fClientPhone: $('f-client-phone'),
  fDate: $('f-date'),
  fTime: $('f-time'),
  fDuration: $('f-duration'),
  fPractitioner: $('f-practitioner'),
  fModality: $('f-modality'),
  whenNote: $('f-when-note'),
  formClose: $('appointment-close'),
  formSave: $('appointment-save'),
  confirm: $('confirm-dialog'),
  confirmText: $('confirm-text'),
  confirmError: $('confirm-error'),
  confirmNo: $('confirm-no'),
  confirmYes: $('confirm-yes'),
};

const MODALITY_LABEL = { 'in-person': 'In-Person', telehealth: 'Telehealth (Video)' };
const STATUS_LABEL = { scheduled: 'Scheduled', cancelled: 'Cancelled' };
const PRACTITIONER_KEY = 'telehealth-console.practitioner';
const E164 = /^\+[1-9]\d{1,14}$/;

const page = {
  state: 'loading',
  timeZone: 'UTC',
  clinicName: '',
  editing: null, // the appointment being edited, or null for a new one
  cancelling: null, // the appointment the confirmation is about
  returnFocus: null, // where focus goes when a dialog closes
  loaded: { outbox: false, usage: false },
};
window.__console = page;

// ---- small helpers ----------------------------------------------------------------------------------------

function setState(s) {
  page.state = s;
  document.body.dataset.state = s;
}

function notice(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

let statusTimer = 0;
/** A short message for everyone, screen readers included (the status region is aria-live). */
function announce(text) {
  clearTimeout(statusTimer);
  el.status.textContent = text;
  el.status.classList.toggle('status--shown', !!text);
  if (text) statusTimer = setTimeout(() => announce(''), 6000);
}

function node(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else if (k === 'dataset') Object.assign(n.dataset, v);
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : v);
  }
  n.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return n;
}

/** Visible text plus words only a screen reader hears, so "Edit" says which appointment. */
function labelled(visible, hidden) {
  return [visible, node('span', { class: 'sr-only', text: ` ${hidden}` })];
}

const tz = () => page.timeZone;
const when = (iso) => (iso ? ct.formatDateTime(iso, tz()) : '—');
const errorText = (err) => (err instanceof ConsoleApiError ? err.message : 'Something went wrong. Please try again.');

// ---- screens and session ----------------------------------------------------------------------------------

function showScreen(name) {
  el.loading.hidden = name !== 'loading';
  el.signin.hidden = name !== 'signin';
  el.console.hidden = name !== 'console';
  el.signOut.hidden = name !== 'console';
  el.zoneNote.hidden = name !== 'console';
}

function showSignIn(message) {
  for (const d of [el.dialog, el.confirm]) if (d.open) d.close();
  setState('signed-out');
  showScreen('signin');
  el.clinicName.textContent = page.clinicName || 'Practitioner console';
  notice(el.signinError, message);
  el.signinButton.disabled = false;
  el.apiKey.focus();
}

function applySession(session) {
  page.clinicName = session.clinicName || '';
  page.timeZone = ct.isValidTimeZone(session.clinicTimezone) ? session.clinicTimezone : 'UTC';
  el.clinicName.textContent = page.clinicName || 'Practitioner console';
  document.title = page.clinicName ? `${page.clinicName} · Practitioner console` : 'Practitioner console';
  const zone = `${page.timeZone} (${ct.zoneAbbreviation(Date.now(), page.timeZone)})`;
  el.zoneName.textContent = zone;
  for (const z of document.querySelectorAll('.zone-label')) z.textContent = zone;
}

function enterConsole(session) {
  applySession(session);
  setState('signed-in');
  showScreen('console');
  page.loaded = { outbox: false, usage: false };
  selectTab(el.tabs[0], { focus: false });
  loadAppointments();
}

async function start() {
  api.setUnauthorizedHandler(() => showSignIn('Your session has ended. Please sign in again.'));
  try {
    const session = await api.getSession();
    if (session) enterConsole(session);
    else showSignIn('');
  } catch (err) {
    showSignIn(errorText(err));
  }
}

el.signinForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = el.apiKey.value.trim();
  if (!key) {
    notice(el.signinError, 'Enter the API key.');
    el.apiKey.setAttribute('aria-invalid', 'true');
    el.apiKey.focus();
    return;
  }
  el.apiKey.removeAttribute('aria-invalid');
  el.signinButton.disabled = true;
  notice(el.signinError, '');
  try {
    const session = await api.signIn(key);
    // The key is not kept anywhere in the page once it has done its job.
    el.apiKey.value = '';
    if (!session) throw new ConsoleApiError(401, 'Unauthorized', 'Signing in did not stick: are cookies allowed for this site?');
    enterConsole(session);
    announce('Signed in.');
    el.appointmentsTitle.focus();
  } catch (err) {
    el.signinButton.disabled = false;
    el.apiKey.setAttribute('aria-invalid', 'true');
    notice(el.signinError, err.status === 401 ? 'That API key is not valid.' : errorText(err));
    el.apiKey.select();
    el.apiKey.focus();
  }
});

el.signOut.addEventListener('click', async () => {
  el.signOut.disabled = true;
  try {
    await api.signOut();
  } catch {
    /* the cookie is cleared or already dead either way */
  }
  el.signOut.disabled = false;
  el.appointments.replaceChildren();
  el.outboxRows.replaceChildren();
  el.usageRows.replaceChildren();
  el.usageTotals.replaceChildren();
  showSignIn('');
  announce('Signed out.');
});

// ---- tabs -------------------------------------------------------------------------------------------------

function selectTab(tab, { focus = true } = {}) {
  for (const t of el.tabs) {
    const selected = t === tab;
    t.setAttribute('aria-selected', String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id === 'tab-outbox' && !page.loaded.outbox) loadOutbox();
  if (tab.id === 'tab-usage' && !page.loaded.usage) {
    const today = ct.dayKey(Date.now(), page.timeZone);
    el.usageTo.value ||= today;
    el.usageFrom.value ||= ct.addDays(today, -29);
    loadUsage();
  }
}

for (const tab of el.tabs) {
  tab.addEventListener('click', () => selectTab(tab));
  tab.addEventListener('keydown', (event) => {
    const i = el.tabs.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: el.tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(el.tabs[(next + el.tabs.length) % el.tabs.length]);
  });
}

// ---- appointments -----------------------------------------------------------------------------------------

let appointmentsRequest = 0;

async function loadAppointments() {
  const mine = ++appointmentsRequest;
  const days = Number(el.rangeSelect.value) || 7;
  const today = ct.dayKey(Date.now(), tz());
  const from = ct.startOfDay(today, tz());
  const to = ct.startOfDay(ct.addDays(today, days), tz());
  el.appointments.setAttribute('aria-busy', 'true');
  notice(el.appointmentsError, '');
  try {
    const list = await api.listAppointments({
      from: ct.toRfc3339(from),
      to: ct.toRfc3339(to),
      status: el.includeCancelled.checked ? undefined : 'scheduled',
    });
    if (mine !== appointmentsRequest) return;
    renderAppointments(list);
  } catch (err) {
    if (mine !== appointmentsRequest || err.status === 401) return;
    notice(el.appointmentsError, `Could not load the appointments. ${errorText(err)}`);
  } finally {
    if (mine === appointmentsRequest) el.appointments.setAttribute('aria-busy', 'false');
  }
}

function renderAppointments(list) {
  const sorted = [...list].sort((a, b) => Date.parse(a.start_time) - Date.parse(b.start_time));
  if (sorted.length === 0) {
    el.appointments.replaceChildren(node('p', { class: 'muted empty', text: 'No appointments in this period.' }));
    return;
  }
  const byDay = new Map();
  for (const a of sorted) {
    const key = ct.dayKey(a.start_time, tz());
    if (!byDay.has(key)) byDay.set(key, []);
    byDay.get(key).push(a);
  }
  const sections = [];
  for (const [key, items] of byDay) {
    const headingId = `day-${key}`;
    sections.push(
      node(
        'section',
        { class: 'day', 'aria-labelledby': headingId },
        node('h3', { id: headingId, class: 'day-heading', text: ct.formatDay(items[0].start_time, tz()) }),
        node('ul', { class: 'appts' }, ...items.map(appointmentRow)),
      ),
    );
  }
  el.appointments.replaceChildren(...sections);
}

function appointmentRow(a) {
  const time = ct.formatTime(a.start_time, tz());
  const who = `for ${a.client_name} at ${time}`;
  const scheduled = a.status === 'scheduled';
  const telehealth = a.modality === 'telehealth';
  const actions = node('div', { class: 'appt-actions' });
  let linkBlock = null;
  if (a.telehealth_link) {
    const inputId = `link-${a.id}`;
    const input = node('input', { id: inputId, class: 'link-input', type: 'text', readonly: true, value: a.telehealth_link });
    linkBlock = node(
      'div',
      { class: 'appt-link' },
      node('label', { for: inputId, class: 'sr-only', text: `Video link ${who}` }),
      input,
      node('button', { class: 'btn btn--small', type: 'button', onclick: () => copyLink(a.telehealth_link, input) }, ...labelled('Copy link', who)),
    );
  }
  if (telehealth && scheduled && a.telehealth_link) {
    actions.append(node('button', { class: 'btn btn--primary', type: 'button', onclick: () => joinVisit(a) }, ...labelled('Join', who)));
  }
  if (scheduled) {
    actions.append(
      node('button', { class: 'btn', type: 'button', onclick: (e) => openForm(a, e.currentTarget) }, ...labelled('Edit', who)),
      node('button', { class: 'btn btn--danger-quiet', type: 'button', onclick: (e) => askCancel(a, e.currentTarget) }, ...labelled('Cancel', who)),
    );
  }
  return node(
    'li',
    { class: `appt${scheduled ? '' : ' appt--cancelled'}`, dataset: { id: a.id } },
    node(
      'div',
      { class: 'appt-when' },
      node('time', { class: 'appt-time', datetime: a.start_time, text: time }),
      node('span', { class: 'appt-duration', text: `${a.duration_minutes} min` }),
    ),
    node(
      'div',
      { class: 'appt-body' },
      node('p', { class: 'appt-client', text: a.client_name }),
      node(
        'p',
        { class: 'appt-meta' },
        node('span', { text: `with ${a.practitioner}` }),
        node('span', { class: `badge badge--${telehealth ? 'video' : 'person'}`, text: MODALITY_LABEL[a.modality] || a.modality }),
        node('span', { class: `badge badge--${scheduled ? 'ok' : 'off'}`, text: STATUS_LABEL[a.status] || a.status }),
      ),
      linkBlock,
    ),
    actions,
  );
}

/**
 * The join page in a new tab, with the practitioner's name filled in (`&name=`); `&console=1` has the page join
 * with this console's session, so the practitioner is the visit's host rather than a guest of the patient's link.
 */
function joinVisit(a) {
  const link = a.telehealth_link;
  const url = `${link}${link.includes('?') ? '&' : '?'}name=${encodeURIComponent(a.practitioner || '')}&console=1`;
  const opened = window.open(url, '_blank', 'noopener');
  // With noopener the browser returns null even on success, so only a blocked popup is worth a word, and that
  // cannot be told apart here: say where the visit went instead.
  if (opened === null) announce('The video visit opened in a new tab.');
}

/** Clipboard API where the page is a secure context; otherwise the old execCommand route; else select it. */
async function copyLink(text, input) {
  if (window.isSecureContext && navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      announce('Link copied.');
      return;
    } catch {
      /* permission refused: fall back */
    }
  }
  input.focus();
  input.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  announce(copied ? 'Link copied.' : 'The link is selected: press Ctrl+C (or long-press and choose Copy) to copy it.');
}

el.newAppointment.addEventListener('click', (e) => openForm(null, e.currentTarget));
el.refreshAppointments.addEventListener('click', loadAppointments);
el.rangeSelect.addEventListener('change', loadAppointments);
el.includeCancelled.addEventListener('change', loadAppointments);

// ---- the appointment form ---------------------------------------------------------------------------------

function openForm(appointment, invoker) {
  page.editing = appointment;
  // randomUUID needs a secure context (HTTPS or localhost, which is how the console is served); never fail over it.
  page.formKey = crypto.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  page.returnFocus = invoker || el.newAppointment;
  el.form.reset();
  notice(el.formError, '');
  notice(el.whenNote, '');
  for (const input of el.form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  el.formSave.disabled = false;
  if (appointment) {
    el.dialogTitle.textContent = 'Edit Appointment';
    const { date, time } = ct.utcToZonedInputs(appointment.start_time, tz());
    el.fClientName.value = appointment.client_name ?? '';
    el.fClientEmail.value = appointment.client_email ?? '';
    el.fClientPhone.value = appointment.client_phone ?? '';
    el.fDate.value = date;
    el.fTime.value = time;
    el.fDuration.value = String(appointment.duration_minutes ?? 50);
    el.fPractitioner.value = appointment.practitioner ?? '';
    el.fModality.value = appointment.modality === 'telehealth' ? 'telehealth' : 'in-person';
  } else {
    el.dialogTitle.textContent = 'New Appointment';
    el.fDate.value = ct.dayKey(Date.now(), tz());
    el.fPractitioner.value = rememberedPractitioner();
  }
  updateWhenNote();
  el.dialog.showModal();
  el.fClientName.focus();
}

function closeForm() {
  if (el.dialog.open) el.dialog.close();
}

/** Focus back to what opened a dialog (the close event comes a task later, so check we are still signed in). */
function restoreFocus() {
  const back = page.returnFocus;
  page.returnFocus = null;
  if (page.state !== 'signed-in') return;
  if (back?.isConnected) back.focus();
  else el.appointmentsTitle.focus();
}

el.dialog.addEventListener('close', restoreFocus);
el.formClose.addEventListener('click', closeForm);

function rememberedPractitioner() {
  try {
    return localStorage.getItem(PRACTITIONER_KEY) || '';
  } catch {
    return '';
  }
}

function rememberPractitioner(name) {
  try {
    localStorage.setItem(PRACTITIONER_KEY, name);
  } catch {
    /* storage may be off: only a convenience */
  }
}

/** What the date and time inputs mean in the clinic's zone, when a clock change makes that worth saying. */
function updateWhenNote() {
  const r = ct.zonedTimeToUtc(el.fDate.value, el.fTime.value, tz());
  if (!r || r.kind === 'exact') return notice(el.whenNote, '');
  if (r.kind === 'skipped') {
    return notice(el.whenNote, `${el.fTime.value} does not exist on that day in ${tz()}: the clocks go forward. Choose another time.`);
  }
  notice(
    el.whenNote,
    `${el.fTime.value} happens twice on that day in ${tz()} (the clocks go back); the first one, ${ct.zoneAbbreviation(r.instant, tz())}, is used.`,
  );
}
el.fDate.addEventListener('input', updateWhenNote);
el.fTime.addEventListener('input', updateWhenNote);

/** The form's values in the API's terms, or a message and the field to fix. */
function readForm() {
  const bad = (input, message) => ({ error: message, input });
  const clientName = el.fClientName.value.trim();
  const email = el.fClientEmail.value.trim();
  const phone = el.fClientPhone.value.replace(/[\s()-]/g, '');
  const practitioner = el.fPractitioner.value.trim();
  const duration = Number(el.fDuration.value);
  if (!clientName) return bad(el.fClientName, 'Enter the client name.');
  if (email && !el.fClientEmail.checkValidity()) return bad(el.fClientEmail, 'The client email does not look like an email address.');
  if (phone && !E164.test(phone)) return bad(el.fClientPhone, 'Write the phone number in international format, e.g. +15551234567.');
  if (!el.fDate.value) return bad(el.fDate, 'Choose a date.');
  if (!el.fTime.value) return bad(el.fTime, 'Choose a time.');
  const start = ct.zonedTimeToUtc(el.fDate.value, el.fTime.value, tz());
  if (!start) return bad(el.fDate, 'The date or time is not valid.');
  if (start.kind === 'skipped') return bad(el.fTime, `That time does not exist on that day in ${tz()} (the clocks go forward). Choose another time.`);
  if (!Number.isInteger(duration) || duration < 5 || duration > 480) return bad(el.fDuration, 'The duration must be a whole number of minutes from 5 to 480.');
  if (!practitioner) return bad(el.fPractitioner, 'Enter the practitioner.');
  const modality = el.fModality.value;
  if (!(modality in MODALITY_LABEL)) return bad(el.fModality, 'Choose the modality.');
  return {
    fields: {
      client_name: clientName,
      client_email: email || null,
      client_phone: phone || null,
      start_time: ct.toRfc3339(start.instant),
      duration_minutes: duration,
      modality,
      practitioner,
    },
  };
}

/** Only what changed, for PATCH. */
function changesFrom(original, fields) {
  const changes = {};
  for (const [k, v] of Object.entries(fields)) {
    const before = original[k] ?? null;
    const same = k === 'start_time' ? Date.parse(before) === Date.parse(v) : before === v;
    if (!same) changes[k] = v;
  }
  return changes;
}

el.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  for (const input of el.form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  const read = readForm();
  if (read.error) {
    notice(el.formError, read.error);
    read.input.setAttribute('aria-invalid', 'true');
    read.input.focus();
    return;
  }
  const { fields } = read;
  const editing = page.editing;
  // A new appointment leaves out the contact details it has none of; the server decides what is required.
  if (!editing) {
    if (fields.client_email === null) delete fields.client_email;
    if (fields.client_phone === null) delete fields.client_phone;
  }
  const body = editing ? changesFrom(editing, fields) : fields;
  if (editing && Object.keys(body).length === 0) {
    closeForm();
    announce('Nothing changed.');
    return;
  }
  el.formSave.disabled = true;
  notice(el.formError, '');
  try {
    const saved = editing ? await api.updateAppointment(editing.id, body) : await api.createAppointment(body, page.formKey);
    rememberPractitioner(fields.practitioner);
    closeForm();
    const at = saved?.start_time ? ` for ${ct.formatDateTime(saved.start_time, tz())}` : '';
    announce(editing ? `Appointment updated${at}.` : `Appointment saved${at}.`);
    await loadAppointments();
    page.loaded.outbox = false;
  } catch (err) {
    el.formSave.disabled = false;
    if (err.status === 401) return;
    notice(el.formError, errorText(err));
  }
});

// ---- cancelling -------------------------------------------------------------------------------------------

function askCancel(appointment, invoker) {
  page.cancelling = appointment;
  page.returnFocus = invoker;
  el.confirmText.textContent = `${appointment.client_name}, ${ct.formatDateTime(appointment.start_time, tz())} (${tz()}). The client is told by email or SMS if the clinic sends messages.`;
  notice(el.confirmError, '');
  el.confirmYes.disabled = false;
  el.confirm.showModal();
  // The safe choice has the focus, so Enter does not cancel by accident.
  el.confirmNo.focus();
}

el.confirm.addEventListener('close', () => {
  page.cancelling = null;
  restoreFocus();
});
el.confirmNo.addEventListener('click', () => el.confirm.close());
el.confirmYes.addEventListener('click', async () => {
  const a = page.cancelling;
  if (!a) return;
  el.confirmYes.disabled = true;
  try {
    await api.cancelAppointment(a.id);
    // Its row's buttons go away with the reload: focus lands on the list's heading instead.
    page.returnFocus = null;
    el.confirm.close();
    announce('Appointment cancelled.');
    await loadAppointments();
    page.loaded.outbox = false;
  } catch (err) {
    el.confirmYes.disabled = false;
    if (err.status === 401) return;
    notice(el.confirmError, errorText(err));
  }
});

// ---- outbox -----------------------------------------------------------------------------------------------

const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : '');

async function loadOutbox() {
  page.loaded.outbox = true;
  notice(el.outboxError, '');
  try {
    const messages = await api.listOutbox({ state: el.outboxState.value || undefined });
    messages.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
    el.outboxRows.replaceChildren(...messages.map(outboxRow));
    el.outboxEmpty.hidden = messages.length > 0;
  } catch (err) {
    page.loaded.outbox = false;
    if (err.status === 401) return;
    el.outboxRows.replaceChildren();
    notice(el.outboxError, `Could not load the messages. ${errorText(err)}`);
  }
}

function outboxRow(m) {
  const retryable = m.state === 'failed' || m.state === 'unknown';
  const action = node('td');
  if (retryable) {
    action.append(
      node('button', { class: 'btn btn--small', type: 'button', onclick: (e) => retry(m, e.currentTarget) }, ...labelled('Retry', `${m.kind} ${m.channel} to ${m.recipient}`)),
    );
  }
  // Created, next attempt and sent in one cell, so the table fits a tablet without scrolling sideways.
  const times = node('dl', { class: 'times' });
  const time = (label, iso) => iso && times.append(node('dt', { text: label }), node('dd', {}, node('time', { datetime: iso, text: when(iso) })));
  time('Created', m.created_at);
  if (m.state === 'pending' || retryable) time('Next attempt', m.next_attempt_at || m.not_before);
  time('Sent', m.sent_at);
  return node(
    'tr',
    { dataset: { id: m.id, state: m.state } },
    node('td', {}, node('span', { class: 'strong', text: cap(m.kind) }), node('br'), node('span', { class: 'muted', text: m.channel === 'sms' ? 'SMS' : cap(m.channel) })),
    node('td', { class: 'wrap', text: m.recipient ?? '—' }),
    node('td', {}, node('span', { class: `badge badge--state-${m.state}`, text: cap(m.state) })),
    node('td', { class: 'num', text: String(m.attempts ?? 0) }),
    node('td', { class: 'wrap', text: m.last_error || '—' }),
    node('td', {}, times),
    action,
  );
}

async function retry(message, button) {
  button.disabled = true;
  try {
    await api.retryMessage(message.id);
    announce('The message will be sent again.');
    await loadOutbox();
    el.outboxState.focus();
  } catch (err) {
    button.disabled = false;
    if (err.status === 401) return;
    notice(el.outboxError, `Could not retry the message. ${errorText(err)}`);
  }
}

el.outboxState.addEventListener('change', loadOutbox);
el.refreshOutbox.addEventListener('click', loadOutbox);

// ---- usage ------------------------------------------------------------------------------------------------

const PROVIDER_LABEL = { local: 'This gateway (local)', chime: 'Amazon Chime' };

async function loadUsage() {
  page.loaded.usage = true;
  notice(el.usageError, '');
  const from = el.usageFrom.value;
  const to = el.usageTo.value;
  if (!from || !to || from > to) {
    notice(el.usageError, 'Choose a From day on or before the To day.');
    return;
  }
  try {
    const res = await api.getUsage({ from, to });
    const usage = res.usage ?? { days: [], totals: [], currency: 'USD' };
    const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: usage.currency || 'USD', maximumFractionDigits: 4 });
    const minutes = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
    const row = (r, first) =>
      node(
        'tr',
        {},
        node(first === 'th' ? 'th' : 'td', { scope: first === 'th' ? 'row' : null, text: r.date ?? 'Total' }),
        node('td', { text: PROVIDER_LABEL[r.provider] || r.provider }),
        node('td', { class: 'num', text: String(r.meetings) }),
        node('td', { class: 'num', text: String(r.sessions) }),
        node('td', { class: 'num', text: minutes.format(r.attendeeMinutes) }),
        node('td', { class: 'num', text: money.format(r.estimatedCost) }),
      );
    el.usageRows.replaceChildren(...(usage.days ?? []).map((r) => row(r, 'th')));
    el.usageTotals.replaceChildren(...(usage.totals ?? []).map((r) => row(r, 'th')));
    el.usageEmpty.hidden = (usage.days ?? []).length > 0;
  } catch (err) {
    page.loaded.usage = false;
    if (err.status === 401) return;
    notice(el.usageError, `Could not load the usage. ${errorText(err)}`);
  }
}

el.usageForm.addEventListener('submit', (event) => {
  event.preventDefault();
  loadUsage();
});

// ---- start ------------------------------------------------------------------------------------------------

start();
