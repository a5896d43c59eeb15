// Unit tests of web/js/clinic-time.js (no browser, no server): wall-clock times in the clinic's zone to UTC
// instants and back, across daylight-saving changes in both hemispheres and in zones with odd offsets.
// Node's ICU carries the same tz database the browser uses. Run: node --test tests/browser/clinic-time.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addDays,
  dayKey,
  isValidTimeZone,
  offsetAt,
  startOfDay,
  toRfc3339,
  utcToZonedInputs,
  zonedTimeToUtc,
} from '../../web/js/clinic-time.js';

const utc = (date, time, tz) => {
  const r = zonedTimeToUtc(date, time, tz);
  return r && { at: toRfc3339(r.instant), kind: r.kind };
};

test('an ordinary time converts with the offset in force that day', () => {
  assert.deepEqual(utc('2026-01-15', '09:30', 'America/New_York'), { at: '2026-01-15T14:30:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-07-15', '09:30', 'America/New_York'), { at: '2026-07-15T13:30:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-07-15', '09:30', 'UTC'), { at: '2026-07-15T09:30:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-07-15', '09:30', 'Europe/London'), { at: '2026-07-15T08:30:00Z', kind: 'exact' });
});

test('the day clocks go forward: times just before and after the gap, and one inside it', () => {
  // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
  assert.deepEqual(utc('2026-03-08', '01:59', 'America/New_York'), { at: '2026-03-08T06:59:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-03-08', '03:00', 'America/New_York'), { at: '2026-03-08T07:00:00Z', kind: 'exact' });
  // 02:30 never happens; like Temporal's "compatible", it is read as 03:30 EDT.
  assert.deepEqual(utc('2026-03-08', '02:30', 'America/New_York'), { at: '2026-03-08T07:30:00Z', kind: 'skipped' });
  // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST.
  assert.deepEqual(utc('2026-03-29', '02:15', 'Europe/Berlin'), { at: '2026-03-29T01:15:00Z', kind: 'skipped' });
  assert.deepEqual(utc('2026-03-29', '10:00', 'Europe/Berlin'), { at: '2026-03-29T08:00:00Z', kind: 'exact' });
});

test('the day clocks go back: a time in the repeated hour is ambiguous and takes the earlier instant', () => {
  // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice.
  assert.deepEqual(utc('2026-11-01', '01:30', 'America/New_York'), { at: '2026-11-01T05:30:00Z', kind: 'ambiguous' });
  assert.deepEqual(utc('2026-11-01', '00:59', 'America/New_York'), { at: '2026-11-01T04:59:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-11-01', '02:00', 'America/New_York'), { at: '2026-11-01T07:00:00Z', kind: 'exact' });
  // Sydney (southern hemisphere), 2026-04-05: 03:00 AEDT becomes 02:00 AEST.
  assert.deepEqual(utc('2026-04-05', '02:30', 'Australia/Sydney'), { at: '2026-04-04T15:30:00Z', kind: 'ambiguous' });
  // Sydney, 2026-10-04: 02:00 AEST becomes 03:00 AEDT.
  assert.deepEqual(utc('2026-10-04', '02:30', 'Australia/Sydney'), { at: '2026-10-03T16:30:00Z', kind: 'skipped' });
});

test('zones with half- and quarter-hour offsets, and a half-hour daylight-saving shift', () => {
  assert.deepEqual(utc('2026-05-01', '10:00', 'Asia/Kolkata'), { at: '2026-05-01T04:30:00Z', kind: 'exact' });
  assert.deepEqual(utc('2026-05-01', '10:00', 'Asia/Kathmandu'), { at: '2026-05-01T04:15:00Z', kind: 'exact' });
  // Lord Howe moves by 30 minutes: 2026-10-04 02:00 (+10:30) becomes 02:30 (+11).
  assert.deepEqual(utc('2026-10-04', '02:10', 'Australia/Lord_Howe'), { at: '2026-10-03T15:40:00Z', kind: 'skipped' });
});

test('round trip: every quarter hour of a fall-back day shows the inputs it was made from', () => {
  for (const tz of ['America/New_York', 'Europe/Berlin', 'Australia/Sydney', 'Asia/Tokyo']) {
    for (let m = 0; m < 24 * 60; m += 15) {
      const time = `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
      for (const date of ['2026-11-01', '2026-10-25', '2026-04-05', '2026-06-21']) {
        const r = zonedTimeToUtc(date, time, tz);
        if (r.kind === 'skipped') continue;
        assert.deepEqual(utcToZonedInputs(r.instant, tz), { date, time }, `${tz} ${date} ${time}`);
      }
    }
  }
});

test('malformed or impossible dates and times give null', () => {
  for (const [d, t] of [['2026-02-30', '10:00'], ['2026-13-01', '10:00'], ['2026-1-5', '10:00'], ['2026-01-05', '24:00'], ['', '']]) {
    assert.equal(zonedTimeToUtc(d, t, 'UTC'), null, `${d} ${t}`);
  }
});

test('days, offsets and zone names', () => {
  assert.equal(addDays('2026-12-31', 1), '2027-01-01');
  assert.equal(addDays('2026-03-01', -1), '2026-02-28');
  assert.equal(dayKey(new Date('2026-12-03T23:30:00Z'), 'America/New_York'), '2026-12-03');
  assert.equal(dayKey(new Date('2026-12-03T23:30:00Z'), 'Asia/Tokyo'), '2026-12-04');
  assert.equal(toRfc3339(startOfDay('2026-07-01', 'Europe/Berlin')), '2026-06-30T22:00:00Z');
  assert.equal(offsetAt(Date.parse('2026-07-01T00:00:00Z'), 'America/New_York'), -4 * 3600_000);
  assert.ok(isValidTimeZone('America/New_York') && isValidTimeZone('UTC'));
  assert.ok(!isValidTimeZone('Mars/Olympus_Mons'));
});
