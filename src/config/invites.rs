//! How long invite links live (`INVITE_TTL`, `INVITE_GRACE`), parsed once at start; `auth` signs the expiry
//! into each invite.

use anyhow::bail;
use std::time::Duration;

/// How long invite links live: an appointment's (or a meeting's with `endsAt`) until the end plus `grace`,
/// any other until `ttl` after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteLifetime {
    /// `INVITE_TTL` (default 7 days).
    pub ttl: Duration,
    /// `INVITE_GRACE` (default 2 hours; never shorter than `MEETING_GRACE_SECS`, so a link never dies before
    /// its meeting stops taking joins).
    pub grace: Duration,
}

impl Default for InviteLifetime {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(7 * 86_400), grace: Duration::from_secs(2 * 3600) }
    }
}

/// The longest either may be: a link is a bearer credential in someone's mailbox.
const MAX_INVITE_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// `INVITE_TTL` and `INVITE_GRACE`, each like `90m`, `2h` or `7d`; the grace is raised to `meeting_grace`.
pub fn from_lookup(get: impl Fn(&str) -> Option<String>, meeting_grace: Duration) -> anyhow::Result<InviteLifetime> {
    let d = InviteLifetime::default();
    let read = |name: &str, default: Duration, zero_ok: bool| -> anyhow::Result<Duration> {
        let Some(v) = get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else { return Ok(default) };
        match parse_duration(&v) {
            Some(t) if t <= MAX_INVITE_LIFETIME && (zero_ok || !t.is_zero()) => Ok(t),
            _ => bail!("{name}={v:?} is invalid: expected a duration like 90m, 2h or 7d (at most 366d)"),
        }
    };
    let ttl = read("INVITE_TTL", d.ttl, false)?;
    let grace = read("INVITE_GRACE", d.grace, true)?.max(meeting_grace);
    Ok(InviteLifetime { ttl, grace })
}

/// `45s`, `90m`, `2h`, `7d`, or `0`.
fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_live_a_week_or_until_the_end_plus_a_grace_no_shorter_than_the_meetings() {
        let none = |_: &str| None;
        let half_hour = Duration::from_secs(1800);
        assert_eq!(from_lookup(none, half_hour).unwrap(), InviteLifetime::default());
        let set = |name: &str| match name {
            "INVITE_TTL" => Some("36h".to_owned()),
            "INVITE_GRACE" => Some("10m".to_owned()),
            _ => None,
        };
        let l = from_lookup(set, half_hour).unwrap();
        assert_eq!((l.ttl, l.grace), (Duration::from_secs(36 * 3600), half_hour), "the grace is raised to the meeting's");
        let zero = |name: &str| (name == "INVITE_GRACE").then(|| "0".to_owned());
        assert_eq!(from_lookup(zero, Duration::ZERO).unwrap().grace, Duration::ZERO);
        for bad in ["0", "0d", "2w", "400d", "h"] {
            let get = |name: &str| (name == "INVITE_TTL").then(|| bad.to_owned());
            assert!(from_lookup(get, half_hour).is_err(), "{bad:?}");
        }
    }
}
