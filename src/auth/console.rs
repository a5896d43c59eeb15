//! Console sessions and one-time sign-in links.
//!
//! The practitioner console signs in with an API key (or the one-time link printed in the start-up banner) and
//! then holds a session cookie. A session is a **server-side random id**, not a signed token: signing out must
//! kill it at once, which a self-contained token could only do with a revocation list anyway, and a restart
//! ending every session is the safe default for a clinic machine. So:
//! - the cookie carries 32 random bytes and nothing else (never the API key, never who signed in);
//! - the table keys sessions by the id's SHA-256, so the map's lookup timing and a memory dump of the table say
//!   nothing usable about a live id;
//! - each session has its own CSRF token, which the console sends back in `X-CSRF-Token` on every
//!   state-changing request (compared in constant time);
//! - a session lives a fixed time from sign-in (`CONSOLE_SESSION_HOURS`), not extended by use;
//! - the table is bounded: expired entries are swept on every sign-in, and when it is still full the session
//!   closest to its end is dropped.
//!
//! A one-time sign-in link is a random token, also stored hashed, valid for 15 minutes and for one use.

use super::{B64, Caller, now, random_token};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Live sessions at most (a clinic has a handful of practitioners; this only bounds a flood of sign-ins).
const MAX_SESSIONS: usize = 10_000;
/// Unused one-time links at most (one is issued per start; tests and embedders may issue more).
const MAX_LOGIN_LINKS: usize = 16;
/// How long a one-time sign-in link works.
pub const LOGIN_LINK_TTL: Duration = Duration::from_secs(15 * 60);

type Digest32 = [u8; 32];

fn digest(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

/// A session as a request handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Who acts: the API key signed in with (by fingerprint), or `Caller::Console` for the one-time link.
    pub caller: Caller,
    pub csrf_token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl ConsoleSession {
    /// Whether `presented` is this session's CSRF token. Constant-time for tokens of the right length.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(presented.trim().as_bytes()))
    }
}

/// A session just started: the cookie value (`id`) is only ever handed out here.
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
    pub session: ConsoleSession,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginLinkError {
    /// Never issued, already used, or expired: the page says the same for all three.
    #[error("the sign-in link was already used or has expired")]
    UsedOrExpired,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<Digest32, ConsoleSession>,
    /// Token digest → expiry (unix seconds).
    login_links: HashMap<Digest32, i64>,
}

pub struct ConsoleSessions {
    ttl: Duration,
    max_sessions: usize,
    inner: Mutex<Inner>,
}

impl ConsoleSessions {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, max_sessions: MAX_SESSIONS, inner: Mutex::new(Inner::default()) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The table stays usable after a panic elsewhere: every change to it is a single map operation, so a
    /// poisoned lock never guards a half-made change.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a session for `caller`. The returned id goes into the cookie and nowhere else.
    pub fn start(&self, caller: Caller) -> NewSession {
        self.start_at(caller, now())
    }

    fn start_at(&self, caller: Caller, at: i64) -> NewSession {
        let id = random_token(32);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let session = ConsoleSession { caller, csrf_token: random_token(32), expires_at: at.saturating_add(ttl) };
        let mut inner = self.lock();
        inner.sessions.retain(|_, s| s.expires_at > at);
        if inner.sessions.len() >= self.max_sessions {
            let oldest = inner.sessions.iter().min_by_key(|(_, s)| s.expires_at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.sessions.remove(&k);
            }
        }
        inner.sessions.insert(digest(&id), session.clone());
        NewSession { id, session }
    }

    /// The live session with this cookie value, if any.
    pub fn find(&self, id: &str) -> Option<ConsoleSession> {
        self.find_at(id, now())
    }

    fn find_at(&self, id: &str, at: i64) -> Option<ConsoleSession> {
        // Cheap shape check first: a cookie that cannot be one of ours costs no hashing or locking.
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        let key = digest(id);
        let mut inner = self.lock();
        match inner.sessions.get(&key) {
            Some(s) if s.expires_at > at => Some(s.clone()),
            Some(_) => {
                inner.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Signs out: the id stops working at once. Returns whether it was live.
    pub fn end(&self, id: &str) -> bool {
        self.lock().sessions.remove(&digest(id)).is_some()
    }

    /// How many sessions are live (for tests and a future metric).
    pub fn live(&self) -> usize {
        let at = now();
        self.lock().sessions.values().filter(|s| s.expires_at > at).count()
    }

    /// A one-time sign-in token, valid for `LOGIN_LINK_TTL`.
    pub fn issue_login_link(&self) -> String {
        self.issue_login_link_at(now())
    }

    fn issue_login_link_at(&self, at: i64) -> String {
        let token = random_token(32);
        let expires_at = at.saturating_add(LOGIN_LINK_TTL.as_secs() as i64);
        let mut inner = self.lock();
        inner.login_links.retain(|_, exp| *exp > at);
        if inner.login_links.len() >= MAX_LOGIN_LINKS {
            let oldest = inner.login_links.iter().min_by_key(|(_, exp)| **exp).map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.login_links.remove(&k);
            }
        }
        inner.login_links.insert(digest(&token), expires_at);
        token
    }

    /// Uses up a one-time token. Removing it before checking the time means a second use fails even when the
    /// first one came too late.
    pub fn redeem_login_link(&self, token: &str) -> Result<(), LoginLinkError> {
        self.redeem_login_link_at(token, now())
    }

    fn redeem_login_link_at(&self, token: &str, at: i64) -> Result<(), LoginLinkError> {
        if token.is_empty() || token.len() > 64 || B64.decode(token).is_err() {
            return Err(LoginLinkError::UsedOrExpired);
        }
        match self.lock().login_links.remove(&digest(token)) {
            Some(expires_at) if expires_at > at => Ok(()),
            _ => Err(LoginLinkError::UsedOrExpired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_caller() -> Caller {
        Caller::ApiKey { fingerprint: "0123456789ab".into() }
    }

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_ends() {
        let s = ConsoleSessions::new(Duration::from_secs(3600));
        let t0 = 1_000_000;
        let new = s.start_at(key_caller(), t0);
        assert_eq!(s.find_at(&new.id, t0 + 10).map(|x| x.caller), Some(key_caller()));
        assert!(s.find_at(&new.id, t0 + 3600).is_none(), "expired at its end");
        let again = s.start(key_caller());
        assert!(s.find(&again.id).is_some());
        assert!(s.end(&again.id));
        assert!(s.find(&again.id).is_none(), "ended by sign-out");
        assert!(!s.end(&again.id));
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_distinct() {
        let s = ConsoleSessions::new(Duration::from_secs(60));
        let (a, b) = (s.start(key_caller()), s.start(key_caller()));
        assert_ne!(a.id, b.id);
        assert_ne!(a.session.csrf_token, b.session.csrf_token);
        assert_ne!(a.id, a.session.csrf_token);
        assert!(a.session.csrf_matches(&a.session.csrf_token));
        assert!(!a.session.csrf_matches(&b.session.csrf_token));
        assert!(!a.session.csrf_matches(""));
        assert!(s.find("not-a-session").is_none());
        assert!(s.find(&"x".repeat(500)).is_none());
    }

    #[test]
    fn a_login_link_works_once_and_not_after_fifteen_minutes() {
        let s = ConsoleSessions::new(Duration::from_secs(60));
        let t0 = 2_000_000;
        let token = s.issue_login_link_at(t0);
        assert_eq!(s.redeem_login_link_at(&token, t0 + 1), Ok(()));
        assert_eq!(s.redeem_login_link_at(&token, t0 + 2), Err(LoginLinkError::UsedOrExpired));
        let late = s.issue_login_link_at(t0);
        assert_eq!(s.redeem_login_link_at(&late, t0 + 15 * 60), Err(LoginLinkError::UsedOrExpired));
        assert_eq!(s.redeem_login_link_at("", t0), Err(LoginLinkError::UsedOrExpired));
        assert_eq!(s.redeem_login_link_at("not base64!", t0), Err(LoginLinkError::UsedOrExpired));
    }

    #[test]
    fn the_table_is_bounded() {
        let s = ConsoleSessions { max_sessions: 50, ..ConsoleSessions::new(Duration::from_secs(3600)) };
        let first = s.start_at(key_caller(), 0);
        for i in 1..=50 {
            s.start_at(key_caller(), i);
        }
        assert_eq!(s.lock().sessions.len(), 50);
        assert!(s.find_at(&first.id, 1).is_none(), "the session closest to its end made room");
    }
}
