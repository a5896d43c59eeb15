//! Which messages an appointment change causes, rendered now and queued in the outbox with the change:
//! one per channel the client can be reached on (e-mail, SMS), for the confirmation / update / cancellation,
//! and a reminder per configured offset before the visit.

use crate::ids::OutboxId;
use crate::notify::templates::{self, Notice};
use crate::store::appointments::{AppointmentRecord, Modality};
use crate::store::outbox::{Channel, OutboxMessage, OutboxState};
use chrono::{DateTime, Duration, Utc};

pub use crate::notify::templates::NoticeKind;

#[derive(Debug, Clone)]
pub struct Notices {
    /// The clinic's zone: every date and time a person reads.
    pub tz: chrono_tz::Tz,
    /// Signs every message (`CLINIC_NAME`).
    pub practice_name: String,
    /// Reminders go this long before the visit (`REMINDER_OFFSETS`, default 24 h and 1 h).
    pub reminder_offsets: Vec<Duration>,
}

impl Notices {
    /// The change's own notice on every channel, plus the visit's reminders (not for a cancellation).
    pub fn messages(&self, a: &AppointmentRecord, kind: NoticeKind, now: DateTime<Utc>) -> Vec<OutboxMessage> {
        let mut out = self.render(a, kind, now, now, None);
        if kind != NoticeKind::Cancellation {
            out.extend(self.reminders(a, now));
        }
        out
    }

    /// One reminder per offset whose time is still ahead. Those already due are folded into a single
    /// reminder sent at once, unless the visit has started (then none): two identical reminders at the same
    /// moment would only be noise.
    pub fn reminders(&self, a: &AppointmentRecord, now: DateTime<Utc>) -> Vec<OutboxMessage> {
        if a.start_time <= now {
            return Vec::new();
        }
        let mut due: Vec<DateTime<Utc>> = self.reminder_offsets.iter().map(|o| a.start_time - *o).collect();
        let already = due.iter().any(|d| *d <= now);
        due.retain(|d| *d > now);
        if already {
            due.push(now);
        }
        due.sort();
        due.dedup();
        due.into_iter().flat_map(|at| self.render(a, NoticeKind::Reminder, now, at, Some(a.start_time))).collect()
    }

    fn render(
        &self,
        a: &AppointmentRecord,
        kind: NoticeKind,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
        visit_starts_at: Option<DateTime<Utc>>,
    ) -> Vec<OutboxMessage> {
        let telehealth = a.modality == Modality::Telehealth;
        let notice = Notice {
            kind,
            client_name: &a.client_name,
            starts_at: a.start_time,
            duration_minutes: a.duration_minutes,
            telehealth,
            link: if telehealth && kind != NoticeKind::Cancellation { a.telehealth_link.as_deref() } else { None },
            practice_name: &self.practice_name,
            tz: self.tz,
        };
        let message = |channel, recipient: &str, subject: Option<String>, body: String| OutboxMessage {
            id: OutboxId::new(),
            appointment_id: Some(a.id),
            kind: kind.as_str().to_owned(),
            channel,
            recipient: recipient.to_owned(),
            subject,
            body,
            state: OutboxState::Pending,
            visit_starts_at,
            not_before,
            next_attempt_at: not_before,
            attempts: 0,
            last_error: None,
            claimed_by: None,
            handed_over_at: None,
            sent_at: None,
            created_at: now,
            updated_at: now,
        };
        let mut out = Vec::new();
        if let Some(to) = &a.client_email {
            let email = templates::email(&notice);
            out.push(message(Channel::Email, to, Some(email.subject), email.body));
        }
        if let Some(to) = &a.client_phone {
            out.push(message(Channel::Sms, to, None, templates::sms(&notice)));
        }
        out
    }
}
