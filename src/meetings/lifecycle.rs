//! What happens to meetings over time: who was in them for how long (attendee sessions, the basis of usage and
//! cost), and their automatic deletion (the seed's "delete meetings after sessions").
//!
//! Sessions: a local participant's session opens when its socket joins and ends when it leaves; this process
//! marks the sessions it holds as seen on every cleanup pass, so after a crash they end where they were last
//! seen instead of running on. A Chime participant's page reports `joined`, a heartbeat and `left` (Chime's
//! media never passes through us); a page that stops reporting is ended where it was last seen.
//!
//! Cleanup, on every pass:
//! - any meeting past its window: `endsAt` plus the grace period, or, without `endsAt`, a Chime meeting older
//!   than Chime's own 24-hour limit plus the grace period (deleted at Chime, marked here);
//! - a local meeting someone has been in, empty for `MEETING_IDLE_SECS` (and not before its `endsAt`);
//! - never a meeting with someone connected here.

use super::service::{MeetingError, MeetingService, audit_line, with_role};
use crate::config::LifecycleConfig;
use crate::ids::{AttendeeId, MeetingId, Provider, Role, SessionId};
use crate::room::{Attendance, AttendanceError, LiveAttendee};
use crate::store::{AuditAction, AuditActor, MeetingRecord, SessionRecord};
use chrono::{DateTime, Duration as Span, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Chime ends a meeting after 24 hours whatever happens in it.
const CHIME_MAX_AGE: Span = Span::hours(24);
/// How often a Chime page reports that it is still in the meeting (the join page uses this).
pub const PRESENCE_HEARTBEAT_SECS: u64 = 30;
/// A session not seen for this long is over, at the time it was last seen (at least three missed reports).
const STALE_AFTER_MIN: Span = Span::seconds(120);

/// What one cleanup pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Meetings deleted, by reason (`window`, `idle`).
    pub deleted: Vec<(MeetingId, &'static str)>,
    /// Deletions that failed (the provider was unreachable); the next pass tries again.
    pub failed: usize,
    pub stale_sessions_ended: u64,
}

/// A page's report about its Chime session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Joined,
    /// Still there (the session it reported joining with).
    Heartbeat(SessionId),
    Left(SessionId),
}

/// Admission's view of the store: local participants' lookups and stays.
#[async_trait::async_trait]
impl Attendance for MeetingService {
    async fn live_attendee(&self, meeting: MeetingId, attendee: AttendeeId) -> Result<Option<LiveAttendee>, AttendanceError> {
        let found = self.store.find_live_attendee(meeting, attendee).await?;
        Ok(found.map(|a| LiveAttendee { name: a.external_user_id.as_str().to_owned(), role: a.role }))
    }

    async fn stay_started(&self, meeting: MeetingId, attendee: AttendeeId, role: Role) -> Result<SessionId, AttendanceError> {
        Ok(self.local_session_started(meeting, attendee, role).await?)
    }

    async fn stay_ended(&self, stay: SessionId, meeting: MeetingId, attendee: AttendeeId) -> Result<(), AttendanceError> {
        Ok(self.session_ended(stay, meeting, attendee, Provider::Local).await?)
    }
}

impl MeetingService {
    /// A local participant's socket joined: opens its session (with its `attendee.joined` line, naming `role`).
    pub async fn local_session_started(&self, meeting: MeetingId, attendee: AttendeeId, role: Role) -> Result<SessionId, MeetingError> {
        self.start_session(meeting, attendee, role, Provider::Local, Some(self.node.clone())).await
    }

    /// A session ended (its socket closed, or its page said so): closes it with its `attendee.left` line.
    pub async fn session_ended(
        &self,
        session: SessionId,
        meeting: MeetingId,
        attendee: AttendeeId,
        provider: Provider,
    ) -> Result<(), MeetingError> {
        let audit = audit_line(AuditAction::AttendeeLeft, meeting, Some(attendee), &AuditActor::Attendee, provider);
        self.store.end_session(session, Utc::now(), &audit).await?;
        Ok(())
    }

    async fn start_session(
        &self,
        meeting: MeetingId,
        attendee: AttendeeId,
        role: Role,
        provider: Provider,
        node: Option<String>,
    ) -> Result<SessionId, MeetingError> {
        let now = Utc::now();
        let session = SessionRecord {
            id: SessionId::new(),
            meeting_id: meeting,
            attendee_id: attendee,
            provider,
            node,
            started_at: now,
            last_seen_at: now,
            ended_at: None,
        };
        // The role goes into the line (ids and role only): who joined as what, without a name.
        let audit = with_role(audit_line(AuditAction::AttendeeJoined, meeting, Some(attendee), &AuditActor::Attendee, provider), role);
        self.store.start_session(&session, &audit).await?;
        Ok(session.id)
    }

    /// A Chime page's presence report, for an attendee its presence token names. Returns the session it is
    /// about (a heartbeat for a session that was already ended starts a new one).
    pub async fn presence(&self, meeting: MeetingId, attendee: AttendeeId, report: Presence) -> Result<SessionId, MeetingError> {
        let rec = self.store.find_live_meeting(meeting).await?.ok_or(MeetingError::NotFound)?;
        if rec.provider == Provider::Local {
            return Err(MeetingError::Invalid("a local meeting's presence comes from its signaling socket"));
        }
        let role = self.store.find_live_attendee(meeting, attendee).await?.ok_or(MeetingError::NotFound)?.role;
        match report {
            Presence::Joined => self.start_session(meeting, attendee, role, rec.provider, None).await,
            Presence::Heartbeat(id) => {
                if self.store.touch_session(id, Utc::now()).await? {
                    Ok(id)
                } else {
                    self.start_session(meeting, attendee, role, rec.provider, None).await
                }
            }
            Presence::Left(id) => {
                self.session_ended(id, meeting, attendee, rec.provider).await?;
                Ok(id)
            }
        }
    }

    /// One cleanup pass as of `now` (tests pass a time in the future instead of waiting).
    pub async fn cleanup(&self, now: DateTime<Utc>, cfg: &LifecycleConfig) -> Result<CleanupReport, MeetingError> {
        let mut report = CleanupReport::default();
        self.store.touch_node_sessions(&self.node, now).await?;
        let stale = STALE_AFTER_MIN.max(span(cfg.interval) * 3);
        report.stale_sessions_ended = self.store.end_stale_sessions(now - stale).await?;

        let grace = span(cfg.grace);
        let mut due: Vec<(MeetingRecord, &'static str)> = Vec::new();
        for provider in Provider::ALL {
            if provider == Provider::Chime && self.backend(provider).is_err() {
                continue; // Chime meetings stay until Chime is configured again (their deletion must reach it).
            }
            // Local meetings without an `endsAt` live until deleted or idle: they may be booked weeks ahead.
            let created_before = match provider {
                Provider::Chime => now - CHIME_MAX_AGE - grace,
                Provider::Local => DateTime::<Utc>::UNIX_EPOCH,
            };
            for rec in self.store.meetings_past_window(provider, now - grace, created_before).await? {
                due.push((rec, "window"));
            }
        }
        for rec in self.store.idle_meetings(Provider::Local, now - span(cfg.local_idle), now).await? {
            due.push((rec, "idle"));
        }
        let mut seen = HashSet::new();
        for (rec, reason) in due {
            if !seen.insert(rec.id) || self.rooms.participant_count(rec.id) > 0 {
                continue;
            }
            match self.delete_record(&rec, &AuditActor::System, Some(reason)).await {
                Ok(()) => {
                    tracing::info!(meeting_id = %rec.id, provider = %rec.provider, reason, "meeting cleaned up");
                    self.metrics.meeting_cleaned(rec.provider, reason);
                    report.deleted.push((rec.id, reason));
                }
                // Deleted meanwhile by someone else: nothing to do.
                Err(MeetingError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(meeting_id = %rec.id, provider = %rec.provider, error = %e, "cleanup could not delete");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Attendee-minutes and their estimated cost per day and provider, for sessions that started in
    /// `[from, to]` (whole days of the clinic's zone `tz`, so a day in the report is the day people lived), of
    /// one meeting or all. A session still open counts until `now`.
    pub async fn usage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        meeting: Option<MeetingId>,
        now: DateTime<Utc>,
        cfg: &LifecycleConfig,
        tz: Tz,
    ) -> Result<UsageReport, MeetingError> {
        let sessions = self.store.sessions_between(day_start(tz, from), day_start(tz, to + Span::days(1)), meeting).await?;
        Ok(UsageReport::build(from, to, &sessions, now, cfg, tz))
    }
}

/// The first instant of `day` in `tz`. Where a clock change skips midnight, the first hour that exists.
fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    (0..3)
        .find_map(|h| day.and_hms_opt(h, 0, 0).and_then(|t| tz.from_local_datetime(&t).earliest()))
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

fn span(d: std::time::Duration) -> Span {
    Span::from_std(d).unwrap_or(Span::MAX)
}

/// Usage per day and provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The IANA zone the days are in (`CLINIC_TIMEZONE`).
    pub timezone: &'static str,
    pub currency: &'static str,
    /// Price per attendee-minute used for the estimate, by provider.
    pub rates: BTreeMap<Provider, f64>,
    /// Per day and provider.
    pub days: Vec<UsageRow>,
    /// The whole range, by provider (no `date`).
    pub totals: Vec<UsageRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    pub provider: Provider,
    pub meetings: usize,
    pub sessions: usize,
    pub attendee_minutes: f64,
    pub estimated_cost: f64,
}

/// Meetings seen, sessions, and seconds, for one row.
#[derive(Default)]
struct Tally(HashSet<MeetingId>, usize, f64);

impl UsageReport {
    fn build(from: NaiveDate, to: NaiveDate, sessions: &[SessionRecord], now: DateTime<Utc>, cfg: &LifecycleConfig, tz: Tz) -> Self {
        let rate = |p: Provider| match p {
            Provider::Local => cfg.local_cost_per_minute,
            Provider::Chime => cfg.chime_cost_per_minute,
        };
        // (date, provider) → tally; (None, provider) for the totals.
        let mut by_day: BTreeMap<(Option<NaiveDate>, Provider), Tally> = BTreeMap::new();
        let mut by_provider: BTreeMap<(Option<NaiveDate>, Provider), Tally> = BTreeMap::new();
        for s in sessions {
            let end = s.ended_at.unwrap_or(now).max(s.started_at);
            let seconds = (end - s.started_at).num_milliseconds() as f64 / 1000.0;
            for slot in [
                by_day.entry((Some(s.started_at.with_timezone(&tz).date_naive()), s.provider)).or_default(),
                by_provider.entry((None, s.provider)).or_default(),
            ] {
                slot.0.insert(s.meeting_id);
                slot.1 += 1;
                slot.2 += seconds;
            }
        }
        let rows = |tallies: BTreeMap<(Option<NaiveDate>, Provider), Tally>| -> Vec<UsageRow> {
            tallies
                .into_iter()
                .map(|((date, provider), Tally(meetings, sessions, secs))| UsageRow {
                    date,
                    provider,
                    meetings: meetings.len(),
                    sessions,
                    attendee_minutes: round(secs / 60.0, 2),
                    estimated_cost: round(secs / 60.0 * rate(provider), 4),
                })
                .collect()
        };
        Self {
            from,
            to,
            timezone: tz.name(),
            currency: "USD",
            rates: Provider::ALL.into_iter().map(|p| (p, rate(p))).collect(),
            days: rows(by_day),
            totals: rows(by_provider),
        }
    }
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(provider: Provider, meeting: MeetingId, start: &str, minutes: i64) -> SessionRecord {
        let started_at: DateTime<Utc> = start.parse().unwrap();
        SessionRecord {
            id: SessionId::new(),
            meeting_id: meeting,
            attendee_id: AttendeeId::new(),
            provider,
            node: None,
            started_at,
            last_seen_at: started_at,
            ended_at: Some(started_at + Span::minutes(minutes)),
        }
    }

    #[test]
    fn a_60_minute_two_person_chime_visit_costs_what_the_seed_says_per_attendee_minute() {
        let (m, d) = (MeetingId::new(), "2026-12-01".parse().unwrap());
        let sessions = [
            session(Provider::Chime, m, "2026-12-01T10:00:00Z", 60),
            session(Provider::Chime, m, "2026-12-01T10:00:00Z", 60),
            session(Provider::Local, MeetingId::new(), "2026-12-01T11:00:00Z", 30),
        ];
        let r = UsageReport::build(d, d, &sessions, Utc::now(), &LifecycleConfig::default(), chrono_tz::UTC);
        let chime = r.days.iter().find(|x| x.provider == Provider::Chime).unwrap();
        assert_eq!((chime.meetings, chime.sessions, chime.attendee_minutes), (1, 2, 120.0));
        assert_eq!(chime.estimated_cost, 0.204, "120 attendee-minutes at $0.0017");
        let local = r.days.iter().find(|x| x.provider == Provider::Local).unwrap();
        assert_eq!((local.attendee_minutes, local.estimated_cost), (30.0, 0.0));
    }

    #[test]
    fn sessions_count_on_the_day_they_started_and_open_ones_until_now() {
        let m = MeetingId::new();
        let mut open = session(Provider::Local, m, "2026-12-02T23:50:00Z", 0);
        open.ended_at = None;
        let now: DateTime<Utc> = "2026-12-03T00:10:00Z".parse().unwrap();
        let sessions = [session(Provider::Local, m, "2026-12-01T09:00:00Z", 15), open];
        let r = UsageReport::build("2026-12-01".parse().unwrap(), "2026-12-03".parse().unwrap(), &sessions, now, &LifecycleConfig::default(), chrono_tz::UTC);
        let days: Vec<(String, f64)> = r.days.iter().map(|d| (d.date.unwrap().to_string(), d.attendee_minutes)).collect();
        assert_eq!(days, [("2026-12-01".to_owned(), 15.0), ("2026-12-02".to_owned(), 20.0)]);
        assert_eq!(r.totals[0].attendee_minutes, 35.0);
        assert_eq!(r.totals[0].meetings, 1);
    }

    #[test]
    fn days_are_the_clinics_days() {
        let ny = chrono_tz::America::New_York;
        // 03:30 UTC on the 2nd is 22:30 on the 1st in New York.
        let sessions = [session(Provider::Local, MeetingId::new(), "2026-12-02T03:30:00Z", 10)];
        let r = UsageReport::build("2026-12-01".parse().unwrap(), "2026-12-02".parse().unwrap(), &sessions, Utc::now(), &LifecycleConfig::default(), ny);
        assert_eq!(r.days[0].date.unwrap().to_string(), "2026-12-01");
        assert_eq!(r.timezone, "America/New_York");
        assert_eq!(day_start(ny, "2026-12-01".parse().unwrap()).to_rfc3339(), "2026-12-01T05:00:00+00:00");
        // Midnight skipped by a clock change (Santiago springs forward at 00:00): the day starts at 01:00.
        let santiago = chrono_tz::America::Santiago;
        assert_eq!(day_start(santiago, "2026-09-06".parse().unwrap()).to_rfc3339(), "2026-09-06T04:00:00+00:00");
    }
}
