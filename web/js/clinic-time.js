// Dates and times in the clinic's time zone (CLINIC_TIMEZONE, an IANA name), whatever zone the tablet is set
// to. The console shows every date and time a person reads in that zone, and reads its date and time inputs as
// wall-clock times there; the API speaks UTC instants (RFC 3339 with `Z`).
//
// Only `Intl.DateTimeFormat` is used (no library, no build step): it knows the tz database, so daylight-saving
// rules come from the browser. A wall-clock time maps to zero, one or two instants: in the spring-forward gap
// none exists, in the fall-back overlap two do. `zonedTimeToUtc` reports which, and resolves the way
// Temporal's `disambiguation: "compatible"` does (a skipped time moves forward by the gap, an ambiguous one
// takes the earlier instant), so the form can warn or refuse.
//
// Pure functions, no DOM: unit-tested with `node --test tests/browser/clinic-time.test.mjs`.

const DAY_MS = 86_400_000;
const formatters = new Map();

/** A cached formatter giving numeric wall-clock fields in `timeZone` (construction is the costly part). */
function partsFormatter(timeZone) {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Whether `timeZone` is a zone name this browser knows. */
export function isValidTimeZone(timeZone) {
  try {
    partsFormatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

/** The wall-clock fields of instant `ms` in `timeZone`. */
export function wallClock(ms, timeZone) {
  const out = {};
  for (const p of partsFormatter(timeZone).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') out[p.type] = Number(p.value);
  }
  // Some engines still say 24 for midnight despite h23.
  if (out.hour === 24) out.hour = 0;
  return { year: out.year, month: out.month, day: out.day, hour: out.hour, minute: out.minute, second: out.second };
}

/** The zone's offset from UTC at instant `ms`, in milliseconds (positive east of Greenwich). */
export function offsetAt(ms, timeZone) {
  const w = wallClock(ms, timeZone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
const TIME_RE = /^(\d{2}):(\d{2})(?::(\d{2}))?$/;

/** `YYYY-MM-DD` and `HH:MM[:SS]` as the milliseconds of that wall-clock reading taken as if it were UTC. */
function wallAsUtc(date, time) {
  const d = DATE_RE.exec(date ?? '');
  const t = TIME_RE.exec(time ?? '');
  if (!d || !t) return null;
  const [y, mo, da] = [Number(d[1]), Number(d[2]), Number(d[3])];
  const [h, mi, s] = [Number(t[1]), Number(t[2]), Number(t[3] ?? 0)];
  if (mo < 1 || mo > 12 || da < 1 || da > 31 || h > 23 || mi > 59 || s > 59) return null;
  const ms = Date.UTC(y, mo - 1, da, h, mi, s);
  // Rejects 2026-02-30 and the like, which Date.UTC would roll over into March.
  const back = new Date(ms);
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== da) return null;
  return ms;
}

/**
 * The UTC instant of wall-clock `date` (`YYYY-MM-DD`) and `time` (`HH:MM`) in `timeZone`.
 * Returns `{ instant: Date, kind }` where kind is
 *   'exact'     — the time occurs once;
 *   'ambiguous' — it occurs twice (clocks go back): the earlier instant is returned;
 *   'skipped'   — it does not occur (clocks go forward): the instant the same distance past the change;
 * or `null` when the date or time is malformed.
 */
export function zonedTimeToUtc(date, time, timeZone) {
  const wall = wallAsUtc(date, time);
  if (wall === null) return null;
  // A zone changes its offset at most once within a day either side of any moment, so the offsets a day before
  // and a day after are the only candidates (Temporal's GetPossibleInstantsFor does the same).
  const before = offsetAt(wall - DAY_MS, timeZone);
  const after = offsetAt(wall + DAY_MS, timeZone);
  const candidates = [...new Set([wall - before, wall - after])]
    .filter((t) => t + offsetAt(t, timeZone) === wall)
    .sort((a, b) => a - b);
  if (candidates.length === 1) return { instant: new Date(candidates[0]), kind: 'exact' };
  if (candidates.length > 1) return { instant: new Date(candidates[0]), kind: 'ambiguous' };
  // In the gap: read the wall time with the offset in force before the change, which lands after it.
  return { instant: new Date(wall - before), kind: 'skipped' };
}

/** RFC 3339 in UTC with whole seconds, e.g. `2026-12-03T15:30:00Z` (what the API stores and returns). */
export function toRfc3339(instant) {
  return new Date(instant).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** The `YYYY-MM-DD` and `HH:MM` inputs that show `instant` in `timeZone` (to fill the Edit form). */
export function utcToZonedInputs(instant, timeZone) {
  const w = wallClock(new Date(instant).getTime(), timeZone);
  return { date: `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)}`, time: `${pad(w.hour)}:${pad(w.minute)}` };
}

/** The clinic's calendar day of `instant`, `YYYY-MM-DD` (for grouping by day). */
export function dayKey(instant, timeZone) {
  return utcToZonedInputs(instant, timeZone).date;
}

/** `YYYY-MM-DD` plus `days` calendar days. */
export function addDays(date, days) {
  const ms = wallAsUtc(date, '00:00');
  if (ms === null) return null;
  const d = new Date(ms + days * DAY_MS);
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

/** The instant the clinic's day `date` starts (its midnight, or the first moment after a skipped midnight). */
export function startOfDay(date, timeZone) {
  return zonedTimeToUtc(date, '00:00', timeZone)?.instant ?? null;
}

const displayFormatters = new Map();
function display(timeZone, locale, options) {
  const key = `${timeZone}|${locale ?? ''}|${JSON.stringify(options)}`;
  let f = displayFormatters.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(locale, { timeZone, ...options });
    displayFormatters.set(key, f);
  }
  return f;
}

/** "Thursday, December 3, 2026" (the reader's language), in the clinic's zone. */
export function formatDay(instant, timeZone, locale) {
  return display(timeZone, locale, { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' }).format(new Date(instant));
}

/** "3:30 PM" / "15:30", in the clinic's zone. */
export function formatTime(instant, timeZone, locale) {
  return display(timeZone, locale, { hour: 'numeric', minute: '2-digit' }).format(new Date(instant));
}

/** "Dec 3, 2026, 3:30 PM", in the clinic's zone. */
export function formatDateTime(instant, timeZone, locale) {
  return display(timeZone, locale, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(instant));
}

/** The zone's short name at `instant`, e.g. "EST", "GMT+1". */
export function zoneAbbreviation(instant, timeZone, locale) {
  const parts = display(timeZone, locale, { timeZoneName: 'short' }).formatToParts(new Date(instant));
  return parts.find((p) => p.type === 'timeZoneName')?.value ?? timeZone;
}
