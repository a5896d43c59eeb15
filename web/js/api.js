// The HTTP API the page uses: `POST /api/aws-chime-video` with `action: "create-attendee"`.
// Responses follow Chime's shapes; errors are `{success:false, error:{code, message}}` with Chime's statuses.

const API_PATH = '/api/aws-chime-video';

/** Chime ids are GUIDs. */
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isMeetingId(value) {
  return typeof value === 'string' && GUID.test(value);
}

/** An API failure, with a message meant for the person in front of the page. */
export class ApiError extends Error {
  constructor(kind, code, userMessage) {
    super(userMessage);
    this.kind = kind; // 'invalid-link' | 'expired-link' | 'ended' | 'input' | 'retry'
    this.code = code;
  }
}

function errorFor(status, body) {
  const code = body?.error?.code ?? '';
  const serverMessage = typeof body?.error?.message === 'string' ? body.error.message : '';
  if (body?.error?.reason === 'InviteExpired') {
    return new ApiError('expired-link', code, serverMessage || 'This link has expired. Please ask your clinic for a new one.');
  }
  if (status === 401 || status === 403 || code === 'Unauthorized' || code === 'Forbidden') {
    return new ApiError('invalid-link', code, 'This link is invalid or has expired. Please ask your clinic for a new one.');
  }
  if (status === 404 || code === 'NotFound') {
    return new ApiError('ended', code, 'This meeting has ended or does not exist.');
  }
  if (status === 400 || status === 422) {
    return new ApiError('input', code, serverMessage || 'Please check your name: it must be 2 to 64 characters.');
  }
  if (status === 409) {
    return new ApiError('input', code, serverMessage || 'You are already in this session in another window.');
  }
  if (status === 429) {
    return new ApiError('retry', code, 'Too many attempts. Please wait a moment and try again.');
  }
  return new ApiError('retry', code, 'The video service is not available right now. Please try again in a minute.');
}

/**
 * The practitioner console's CSRF token when this browser is signed in to the console, else ''. With it,
 * create-attendee counts as the console (a host) rather than as the link's invite (a guest).
 */
export async function consoleCsrfToken() {
  try {
    const res = await fetch('/console/session', { headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) return '';
    const session = await res.json();
    return typeof session?.csrfToken === 'string' ? session.csrfToken : '';
  } catch {
    return '';
  }
}

/**
 * Creates this browser's attendee. Resolves to the whole success body
 * (`{attendee, meeting?, demoMode?, provider?}`); rejects with an ApiError. `csrf`: the console session's
 * token (see `consoleCsrfToken`), if any.
 */
export async function createAttendee({ meetingId, attendeeName, invite, csrf }) {
  const body = { action: 'create-attendee', meetingId, attendeeName };
  if (invite) body.invite = invite;
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(API_PATH, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError('retry', 'Network', 'Could not reach the server. Check your connection and try again.');
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    /* not JSON: handled below */
  }
  if (!res.ok || !json || json.success !== true) throw errorFor(res.status, json);
  if (!json.attendee?.JoinToken || !json.attendee?.AttendeeId) {
    throw new ApiError('retry', 'ServiceFailure', 'The server sent an incomplete answer. Please try again.');
  }
  return json;
}

/**
 * A Chime page's presence report (`joined`, `heartbeat`, `left`), authorised by the gateway's presence token.
 * Resolves to `{sessionId}`; `keepalive` lets `left` go out while the page closes.
 */
export async function reportPresence({ token, event, sessionId }) {
  const body = { action: 'attendee-presence', token, event };
  if (sessionId) body.sessionId = sessionId;
  const res = await fetch(API_PATH, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
    cache: 'no-store',
    credentials: 'same-origin',
    keepalive: true,
  });
  return res.ok ? res.json() : null;
}
