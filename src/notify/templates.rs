//! The text of every notification: the seed's reminder formats (`TELEHEALTH_AWS.md`, "Notifications") word for
//! word, and the same layout for confirmations, changes and cancellations. Pure functions of a `Notice`: no I/O,
//! no clock, so each message can be compared whole in a test and rendered again identically on a retry.
//!
//! Times are shown in the clinic's zone (`CLINIC_TIMEZONE`), not the server's or UTC: a patient reads "4:30 PM
//! EST", with the abbreviation chrono-tz gives for that very instant (EDT in summer). Bodies are plain text with
//! `\n` line ends and, like the seed's, no line break after the last line: the mail library turns them into
//! CRLF and ends the last line itself (a trailing `\n` would arrive as an extra blank line).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::fmt::Write as _;

/// Why a patient is being told about an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    Confirmation,
    Update,
    Cancellation,
    Reminder,
}

impl NoticeKind {
    /// A stable name, for storing the kind (e.g. in the outbox).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmation => "confirmation",
            Self::Update => "update",
            Self::Cancellation => "cancellation",
            Self::Reminder => "reminder",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmation" => Self::Confirmation,
            "update" => Self::Update,
            "cancellation" => Self::Cancellation,
            "reminder" => Self::Reminder,
            _ => return None,
        })
    }

    /// The subject's (and the SMS's) first words.
    fn title(self) -> &'static str {
        match self {
            Self::Confirmation => "Appointment Confirmation",
            Self::Update => "Appointment Updated",
            Self::Cancellation => "Appointment Cancelled",
            Self::Reminder => "Appointment Reminder",
        }
    }

    /// The sentence that introduces the date and time.
    fn sentence(self) -> &'static str {
        match self {
            Self::Confirmation => "This is a confirmation that you have an appointment scheduled for:",
            Self::Update => "Your appointment has been changed. It is now scheduled for:",
            Self::Cancellation => "Your appointment scheduled for the time below has been cancelled:",
            Self::Reminder => "This is a reminder that you have an appointment scheduled for:",
        }
    }
}

/// Everything a message says. Borrowed: the caller (the outbox) owns the appointment it was built from.
#[derive(Clone)]
pub struct Notice<'a> {
    pub kind: NoticeKind,
    pub client_name: &'a str,
    pub starts_at: DateTime<Utc>,
    /// Not part of the seed's formats, so not shown; kept so one `Notice` describes the whole appointment.
    pub duration_minutes: u32,
    pub telehealth: bool,
    /// The appointment's full `telehealth_link` (APP_URL + link); only for telehealth visits.
    pub link: Option<&'a str>,
    pub practice_name: &'a str,
    /// The clinic's zone: dates and times are written in it.
    pub tz: Tz,
}

/// Hand-written so a `Notice` in a `{:?}` never shows the patient's name or link.
impl std::fmt::Debug for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("kind", &self.kind)
            .field("starts_at", &self.starts_at)
            .field("telehealth", &self.telehealth)
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub body: String,
}

/// Only the subject (a date); the body holds the patient's name and link.
impl std::fmt::Debug for EmailContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailContent").field("subject", &self.subject).field("body", &"<redacted>").finish()
    }
}

/// `Thursday, December 3, 2026`.
fn date(n: &Notice) -> String {
    n.starts_at.with_timezone(&n.tz).format("%A, %B %-d, %Y").to_string()
}

/// `4:30 PM EST`.
fn time(n: &Notice) -> String {
    n.starts_at.with_timezone(&n.tz).format("%-I:%M %p %Z").to_string()
}

/// `Appointment Reminder - Thursday, December 3, 2026 (Telehealth)`: the email's subject and the SMS's first line.
fn headline(n: &Notice) -> String {
    let suffix = if n.telehealth { " (Telehealth)" } else { "" };
    format!("{} - {}{suffix}", n.kind.title(), date(n))
}

/// Whether the message invites the patient to join: a telehealth visit that is still on.
fn joinable(n: &Notice) -> bool {
    n.telehealth && n.kind != NoticeKind::Cancellation
}

pub fn email(n: &Notice) -> EmailContent {
    let kind_line = if n.telehealth { "Telehealth (Video)" } else { "In-Person" };
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let mut body = String::new();
    let _ = write!(body, "Dear {},\n\n{}\n\n", n.client_name, n.kind.sentence());
    let _ = write!(body, "Date: {}\nTime: {}\nType: {kind_line}\n\n", date(n), time(n));
    if joinable(n) {
        if let Some(link) = n.link {
            let _ = write!(body, "Join your video session here:\n{link}\n\n");
        }
        body.push_str("Please join 5 minutes early to test your connection.\n\n");
    }
    let _ = write!(body, "Best regards,\n{}", n.practice_name);
    EmailContent { subject: headline(n), body }
}

pub fn sms(n: &Notice) -> String {
    let mut text = headline(n);
    if joinable(n) {
        if let Some(link) = n.link {
            let _ = write!(text, "\n\nJoin your video session: {link}");
        }
        text.push_str("\n\nPlease join 5 minutes early.");
    } else if !n.telehealth && n.kind != NoticeKind::Cancellation {
        text.push_str("\n\nPlease arrive 5 minutes early.");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const LINK: &str = "https://clinic.example/telehealth-aws.html?meeting=7f1c6b0e-3a52-4c1e-9d57-2b8f3c4d5e6f";

    /// Thursday, December 3, 2026, 4:30 PM in New York (EST, UTC-5).
    fn notice(kind: NoticeKind, telehealth: bool) -> Notice<'static> {
        Notice {
            kind,
            client_name: "Jane Doe",
            starts_at: Utc.with_ymd_and_hms(2026, 12, 3, 21, 30, 0).unwrap(),
            duration_minutes: 50,
            telehealth,
            link: telehealth.then_some(LINK),
            practice_name: "Riverside Family Practice",
            tz: chrono_tz::America::New_York,
        }
    }

    #[test]
    fn the_telehealth_reminder_email_is_the_seeds_format_word_for_word() {
        // The seed's text, placeholders filled in.
        let expected_body = "\
Dear Jane Doe,

This is a reminder that you have an appointment scheduled for:

Date: Thursday, December 3, 2026
Time: 4:30 PM EST
Type: Telehealth (Video)

Join your video session here:
https://clinic.example/telehealth-aws.html?meeting=7f1c6b0e-3a52-4c1e-9d57-2b8f3c4d5e6f

Please join 5 minutes early to test your connection.

Best regards,
Riverside Family Practice";
        let mail = email(&notice(NoticeKind::Reminder, true));
        assert_eq!(mail.subject, "Appointment Reminder - Thursday, December 3, 2026 (Telehealth)");
        assert_eq!(mail.body, expected_body);
    }

    #[test]
    fn the_telehealth_reminder_sms_is_the_seeds_format_word_for_word() {
        let expected = "\
Appointment Reminder - Thursday, December 3, 2026 (Telehealth)

Join your video session: https://clinic.example/telehealth-aws.html?meeting=7f1c6b0e-3a52-4c1e-9d57-2b8f3c4d5e6f

Please join 5 minutes early.";
        assert_eq!(sms(&notice(NoticeKind::Reminder, true)), expected);
    }

    #[test]
    fn confirmation_and_update_keep_the_layout_with_their_own_words() {
        let c = email(&notice(NoticeKind::Confirmation, true));
        assert_eq!(c.subject, "Appointment Confirmation - Thursday, December 3, 2026 (Telehealth)");
        assert!(c.body.starts_with(
            "Dear Jane Doe,\n\nThis is a confirmation that you have an appointment scheduled for:\n\nDate: Thursday"
        ));
        assert!(c.body.contains(&format!("Join your video session here:\n{LINK}\n\n")));
        let u = email(&notice(NoticeKind::Update, true));
        assert_eq!(u.subject, "Appointment Updated - Thursday, December 3, 2026 (Telehealth)");
        assert!(u.body.contains("\n\nYour appointment has been changed. It is now scheduled for:\n\n"));
        assert_eq!(
            sms(&notice(NoticeKind::Update, true)),
            format!("Appointment Updated - Thursday, December 3, 2026 (Telehealth)\n\nJoin your video session: {LINK}\n\nPlease join 5 minutes early.")
        );
    }

    #[test]
    fn a_cancellation_has_no_join_lines() {
        let expected_body = "\
Dear Jane Doe,

Your appointment scheduled for the time below has been cancelled:

Date: Thursday, December 3, 2026
Time: 4:30 PM EST
Type: Telehealth (Video)

Best regards,
Riverside Family Practice";
        let mail = email(&notice(NoticeKind::Cancellation, true));
        assert_eq!(mail.subject, "Appointment Cancelled - Thursday, December 3, 2026 (Telehealth)");
        assert_eq!(mail.body, expected_body);
        assert_eq!(sms(&notice(NoticeKind::Cancellation, true)), "Appointment Cancelled - Thursday, December 3, 2026 (Telehealth)");
        assert_eq!(sms(&notice(NoticeKind::Cancellation, false)), "Appointment Cancelled - Thursday, December 3, 2026");
    }

    #[test]
    fn an_in_person_visit_has_no_video_or_join_lines() {
        let expected_body = "\
Dear Jane Doe,

This is a reminder that you have an appointment scheduled for:

Date: Thursday, December 3, 2026
Time: 4:30 PM EST
Type: In-Person

Best regards,
Riverside Family Practice";
        for kind in [NoticeKind::Confirmation, NoticeKind::Update, NoticeKind::Cancellation, NoticeKind::Reminder] {
            let n = notice(kind, false);
            let (mail, text) = (email(&n), sms(&n));
            for s in [&mail.subject, &mail.body, &text] {
                assert!(!s.to_lowercase().contains("video") && !s.contains("Join") && !s.contains("join"), "{kind:?}: {s}");
                assert!(!s.contains("Telehealth"), "{kind:?}: {s}");
            }
            assert!(mail.body.contains("\nType: In-Person\n"));
        }
        let n = notice(NoticeKind::Reminder, false);
        assert_eq!(email(&n).subject, "Appointment Reminder - Thursday, December 3, 2026");
        assert_eq!(email(&n).body, expected_body);
        assert_eq!(sms(&n), "Appointment Reminder - Thursday, December 3, 2026\n\nPlease arrive 5 minutes early.");
        let c = notice(NoticeKind::Confirmation, false);
        assert_eq!(sms(&c), "Appointment Confirmation - Thursday, December 3, 2026\n\nPlease arrive 5 minutes early.");
    }

    #[test]
    fn the_zone_abbreviation_follows_daylight_saving_time() {
        let mut n = notice(NoticeKind::Reminder, true);
        n.starts_at = Utc.with_ymd_and_hms(2026, 7, 9, 13, 5, 0).unwrap();
        assert!(email(&n).body.contains("\nDate: Thursday, July 9, 2026\nTime: 9:05 AM EDT\n"), "{}", email(&n).body);
        n.tz = chrono_tz::Europe::Berlin;
        assert!(email(&n).body.contains("\nTime: 3:05 PM CEST\n"), "{}", email(&n).body);
    }

    #[test]
    fn the_clinics_zone_can_move_the_date_across_midnight() {
        // 02:30 UTC on Friday is still Thursday evening in Los Angeles.
        let mut n = notice(NoticeKind::Reminder, true);
        n.starts_at = Utc.with_ymd_and_hms(2026, 12, 4, 2, 30, 0).unwrap();
        n.tz = chrono_tz::UTC;
        assert_eq!(email(&n).subject, "Appointment Reminder - Friday, December 4, 2026 (Telehealth)");
        assert!(email(&n).body.contains("Time: 2:30 AM UTC\n"));
        n.tz = chrono_tz::America::Los_Angeles;
        assert_eq!(email(&n).subject, "Appointment Reminder - Thursday, December 3, 2026 (Telehealth)");
        assert!(email(&n).body.contains("Date: Thursday, December 3, 2026\nTime: 6:30 PM PST\n"));
        assert!(sms(&n).starts_with("Appointment Reminder - Thursday, December 3, 2026 (Telehealth)\n\n"));
    }

    #[test]
    fn names_and_links_are_inserted_as_given_and_debug_hides_them() {
        let mut n = notice(NoticeKind::Reminder, true);
        n.client_name = "Zoë O'Brien <b>";
        let mail = email(&n);
        assert!(mail.body.starts_with("Dear Zoë O'Brien <b>,\n"));
        let shown = format!("{n:?} {mail:?}");
        assert!(!shown.contains("Zoë") && !shown.contains(LINK), "{shown}");
    }

    #[test]
    fn a_telehealth_notice_without_a_link_still_asks_to_join_early() {
        let mut n = notice(NoticeKind::Reminder, true);
        n.link = None;
        assert!(!email(&n).body.contains("Join your video session"));
        assert!(email(&n).body.contains("\n\nPlease join 5 minutes early to test your connection.\n\n"));
        assert_eq!(sms(&n), "Appointment Reminder - Thursday, December 3, 2026 (Telehealth)\n\nPlease join 5 minutes early.");
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [NoticeKind::Confirmation, NoticeKind::Update, NoticeKind::Cancellation, NoticeKind::Reminder] {
            assert_eq!(NoticeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NoticeKind::parse("other"), None);
    }
}
