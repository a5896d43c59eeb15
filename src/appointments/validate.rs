//! The rules an appointment's fields must meet, each failure naming its field (the API answers 400 with it).

use chrono::{DateTime, Utc};

/// Why a field was refused. The message names the field and the rule, never the value (it may be a name or an
/// address, and error messages can reach logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: &'static str,
}

fn invalid(field: &'static str, rule: &'static str) -> Invalid {
    Invalid { field, rule }
}

/// 1–100 characters after trimming, no control characters. Returns the trimmed name.
pub fn name(field: &'static str, s: &str) -> Result<String, Invalid> {
    let s = s.trim();
    let n = s.chars().count();
    if !(1..=100).contains(&n) {
        return Err(invalid(field, "must be 1 to 100 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(s.to_owned())
}

/// A plain `local@domain` address as people type them (RFC 5321 sizes, a dotted domain, no spaces or angle
/// brackets); full RFC 5322 syntax (comments, quoted locals) is not accepted on purpose. Lowercases nothing:
/// the local part is case-sensitive in principle.
pub fn email(s: &str) -> Result<String, Invalid> {
    const FIELD: &str = "client_email";
    let s = s.trim();
    let bad = || invalid(FIELD, "must be an e-mail address like name@example.com");
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    if s.len() > 254 || local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return Err(bad());
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !(local_ok && domain_ok) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in all. Spaces, dashes, dots and
/// parentheses people type are removed first.
pub fn phone(s: &str) -> Result<String, Invalid> {
    let compact: String = s.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0');
    if !ok {
        return Err(invalid("client_phone", "must be an E.164 number like +14155550123"));
    }
    Ok(compact)
}

pub fn duration(minutes: i64) -> Result<u32, Invalid> {
    if !(5..=480).contains(&minutes) {
        return Err(invalid("duration_minutes", "must be 5 to 480 minutes"));
    }
    Ok(minutes as u32)
}

pub fn start_in_future(start: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    if start <= now {
        return Err(invalid("start_time", "must be in the future"));
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("client_name", "  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert!(name("client_name", "   ").is_err());
        assert!(name("client_name", &"x".repeat(101)).is_err());
        assert!(name("client_name", &"é".repeat(100)).is_ok(), "characters, not bytes");
        assert!(name("client_name", "a\u{0}b").is_err());
    }

    #[test]
    fn emails_people_type_pass_and_others_do_not() {
        for ok in ["a@b.co", "first.last+tag@mail.example.org", "x_y@sub-domain.example.com"] {
            assert_eq!(email(ok).unwrap(), ok);
        }
        for bad in ["", "plain", "@example.com", "a@", "a@localhost", "a b@example.com", "a@exa mple.com", "a..b@example.com", "<a@example.com>", "a@-x.com"] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phones_must_be_e164() {
        assert_eq!(phone("+1 (415) 555-0123").unwrap(), "+14155550123");
        assert_eq!(phone("+447911123456").unwrap(), "+447911123456");
        for bad in ["4155550123", "+0123456789", "+1415555012345678", "+1-415-CALL-NOW", "+123"] {
            assert!(phone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duration_and_start_bounds() {
        assert!(duration(4).is_err());
        assert_eq!(duration(5).unwrap(), 5);
        assert_eq!(duration(480).unwrap(), 480);
        assert!(duration(481).is_err());
        let now = Utc::now();
        assert!(start_in_future(now, now).is_err());
        assert!(start_in_future(now + chrono::Duration::seconds(1), now).is_ok());
    }

    #[test]
    fn errors_never_carry_the_value() {
        let e = email("secret-person@").unwrap_err().to_string();
        assert!(!e.contains("secret-person"), "{e}");
        let e = phone("+0999").unwrap_err().to_string();
        assert!(!e.contains("0999"), "{e}");
    }
}
