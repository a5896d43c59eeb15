// The console's HTTP client: the session endpoints, the appointments and outbox API, and get-usage.
//
// Authentication is the HttpOnly session cookie, which scripts never see; what they do hold is the session's
// CSRF token (from GET /console/session), sent as X-CSRF-Token on every request that changes something.
// Errors follow the contract, `{success:false, error:{code, message}}`; a 401 anywhere means the session is
// gone, and `onUnauthorized` lets the page show the sign-in form.

const JSON_TYPE = 'application/json';

/** A failed call. `message` is the server's (meant for the person), or ours for network failures. */
export class ConsoleApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let csrfToken = '';
let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function fallbackMessage(status) {
  if (status === 404) return 'Not found. This gateway may not offer it yet.';
  if (status === 429) return 'Too many requests. Please wait a moment and try again.';
  if (status >= 500) return 'The server could not complete the request. Please try again in a minute.';
  return `The request failed (HTTP ${status}).`;
}

/**
 * One JSON request. Resolves to the success body; rejects with ConsoleApiError. `quiet401` keeps a 401 from
 * triggering the sign-in screen (the sign-in and session calls handle it themselves).
 */
export async function request(method, path, body, { quiet401 = false, idempotencyKey = null } = {}) {
  const headers = { Accept: JSON_TYPE };
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  const mutating = method !== 'GET' && method !== 'HEAD';
  if (mutating) {
    headers['Content-Type'] = JSON_TYPE;
    if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: mutating ? JSON.stringify(body ?? {}) : undefined,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ConsoleApiError(0, 'Network', 'Could not reach the gateway. Check the connection and try again.');
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    /* not JSON (e.g. a plain 404): handled below */
  }
  if (res.ok && json && json.success !== false) return json;
  const code = typeof json?.error?.code === 'string' ? json.error.code : '';
  const message = typeof json?.error?.message === 'string' && json.error.message ? json.error.message : fallbackMessage(res.status);
  if (res.status === 401 && !quiet401) {
    csrfToken = '';
    onUnauthorized();
  }
  throw new ConsoleApiError(res.status, code, message);
}

// ---- session ----

/** `{csrfToken, clinicName, clinicTimezone}` while signed in; null when not. */
export async function getSession() {
  try {
    const s = await request('GET', '/console/session', undefined, { quiet401: true });
    csrfToken = s.csrfToken || '';
    return s;
  } catch (err) {
    if (err instanceof ConsoleApiError && err.status === 401) {
      csrfToken = '';
      return null;
    }
    throw err;
  }
}

export async function signIn(key) {
  await request('POST', '/console/login', { key }, { quiet401: true });
  return getSession();
}

export async function signOut() {
  try {
    await request('POST', '/console/logout', {}, { quiet401: true });
  } finally {
    csrfToken = '';
  }
}

// ---- appointments ----

const qs = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
};

/** Appointments starting in [from, to) (RFC 3339), optionally of one status, ordered by start time. */
export async function listAppointments({ from, to, status }) {
  return (await request('GET', `/api/appointments${qs({ from, to, status })}`)).appointments ?? [];
}

/** `idempotencyKey`: one per opened form, so saving again after a lost answer cannot book the visit twice. */
export async function createAppointment(fields, idempotencyKey) {
  return (await request('POST', '/api/appointments', fields, { idempotencyKey })).appointment;
}

export async function updateAppointment(id, changes) {
  return (await request('PATCH', `/api/appointments/${encodeURIComponent(id)}`, changes)).appointment;
}

export async function cancelAppointment(id) {
  return (await request('POST', `/api/appointments/${encodeURIComponent(id)}/cancel`, {})).appointment;
}

// ---- outbox ----

export async function listOutbox({ state, appointmentId } = {}) {
  return (await request('GET', `/api/outbox${qs({ state, appointment_id: appointmentId })}`)).messages ?? [];
}

export async function retryMessage(id) {
  return (await request('POST', `/api/outbox/${encodeURIComponent(id)}/retry`, {})).message;
}

// ---- usage ----

/** get-usage for whole UTC days `from`..`to` (YYYY-MM-DD): `{usage:{days, totals, currency, rates}, demoMode}`. */
export async function getUsage({ from, to }) {
  return request('POST', '/api/aws-chime-video', { action: 'get-usage', from, to });
}
