//! API keys, invite tokens, join tokens and presence tokens; console sessions live in `console`.
//!
//! Four kinds of credential:
//! - **API key** (bearer): practitioners and server-to-server callers. From `TELEHEALTH_API_KEYS`, or generated
//!   once into `data_dir/api-key` (mode 0600) and reused on later starts. Compared in constant time.
//! - **Invite token**: what a patient's link carries. Bound to one meeting; lets its holder call
//!   `create-attendee` for that meeting and nothing else. It expires at the visit's end plus `INVITE_GRACE`
//!   when the meeting has an end (an appointment's always does), else `INVITE_TTL` after it was made; deleting
//!   the meeting kills it sooner, because every use also checks the store. Links made before invites expired
//!   carry the largest expiry there is and keep working until their meeting is deleted.
//! - **Join token** (Chime's `JoinToken`): bound to one meeting and one attendee, expires at
//!   `min(meeting end, now + join_token_ttl)`. The WebSocket handler verifies it, then checks the store.
//!   (For a Chime meeting the JoinToken is Chime's own.)
//! - **Presence token**: a Chime attendee's page holds one to report when it joined, stays and leaves (the
//!   usage record); bound to one meeting and one attendee, it can do nothing else.
//!
//! Plus the practitioner console's **session cookie** (`console`): started by signing in with an API key or
//! the one-time link of the start-up banner, it then stands in for the key.
//!
//! Tokens are opaque base64url strings: `version | kind | meeting | [attendee] | expires_at | HMAC-SHA256`.
//! The kind byte is inside the MAC, so an invite can never pass as a join token or the other way round.

pub mod console;
pub mod turn;

use crate::config::{Config, InviteLifetime};
use crate::ids::{AttendeeId, MeetingId, Role};
use anyhow::Context;
use base64::Engine;
use console::ConsoleSessions;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// `CONSOLE_SESSION_HOURS`' default, for an `Auth` made without a `Config`.
const DEFAULT_CONSOLE_SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

const TOKEN_VERSION: u8 = 1;
const KIND_JOIN: u8 = b'J';
const KIND_INVITE: u8 = b'I';
const KIND_PRESENCE: u8 = b'P';
const MAC_LEN: usize = 32;
/// File names under `data_dir`.
pub const API_KEY_FILE: &str = "api-key";
pub const SIGNING_SECRET_FILE: &str = "signing-secret";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims {
    pub meeting_id: MeetingId,
    pub attendee_id: AttendeeId,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

/// Who made a call, as the audit log records it. Never a name, IP or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer API key, identified by its fingerprint (first 12 hex digits of its SHA-256).
    ApiKey { fingerprint: String },
    /// The holder of an invite for this meeting.
    Invite { meeting_id: MeetingId },
    /// A console session started from the one-time sign-in link of the start-up banner: whoever could read the
    /// gateway's terminal, which names no key.
    Console,
}

impl Caller {
    /// The `actor` column of the audit log.
    pub fn audit_actor(&self) -> String {
        match self {
            Caller::ApiKey { fingerprint } => format!("api-key:{fingerprint}"),
            Caller::Invite { .. } => "invite".to_owned(),
            Caller::Console => "console".to_owned(),
        }
    }

    /// The role of an attendee this caller creates: a key (a practitioner or a server) or a console session
    /// makes a host; an invite is what a patient holds, so it only ever makes a guest.
    pub fn attendee_role(&self) -> Role {
        match self {
            Caller::ApiKey { .. } | Caller::Console => Role::Host,
            Caller::Invite { .. } => Role::Guest,
        }
    }
}

/// Where the API keys came from; the startup banner tells the operator how to authenticate.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `TELEHEALTH_API_KEYS` (the keys are not repeated in the banner).
    Env { count: usize },
    /// Generated or read back from a file under `data_dir`. `key` is shown once, in the banner, never logged.
    File { path: PathBuf, key: String, generated_now: bool },
}

struct ApiKey {
    digest: [u8; 32],
    fingerprint: String,
}

pub struct Auth {
    keys: Vec<ApiKey>,
    secret: Vec<u8>,
    join_token_ttl_secs: i64,
    invites: InviteLifetime,
    source: KeySource,
    console: ConsoleSessions,
}

impl Auth {
    /// Reads (or creates) the API keys and the signing secret as the config says.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let (keys, source) = if config.api_keys.is_empty() {
            let path = config.data_dir.join(API_KEY_FILE);
            let (key, generated_now) = read_or_create_secret_file(&path, || random_token(32))?;
            (vec![key.clone()], KeySource::File { path, key, generated_now })
        } else {
            (config.api_keys.clone(), KeySource::Env { count: config.api_keys.len() })
        };
        let secret = match &config.signing_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let path = config.data_dir.join(SIGNING_SECRET_FILE);
                read_or_create_secret_file(&path, || random_token(32))?.0.into_bytes()
            }
        };
        let auth = Self::new(keys, secret, config.join_token_ttl.as_secs() as i64, source);
        Ok(auth.with_console_session_ttl(config.console_session_ttl).with_invite_lifetime(config.invites))
    }

    pub fn new(keys: Vec<String>, secret: Vec<u8>, join_token_ttl_secs: i64, source: KeySource) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let digest: [u8; 32] = Sha256::digest(k.as_bytes()).into();
                let fingerprint = hex(&digest[..6]);
                ApiKey { digest, fingerprint }
            })
            .collect();
        let console = ConsoleSessions::new(DEFAULT_CONSOLE_SESSION_TTL);
        Self { keys, secret, join_token_ttl_secs, invites: InviteLifetime::default(), source, console }
    }

    /// How long invites issued from now on live (`INVITE_TTL`, `INVITE_GRACE`).
    pub fn with_invite_lifetime(mut self, invites: InviteLifetime) -> Self {
        self.invites = invites;
        self
    }

    /// How long console sessions started from now on last (the default is 12 hours).
    pub fn with_console_session_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.console = ConsoleSessions::new(ttl);
        self
    }

    /// The console's sessions and one-time sign-in links.
    pub fn console(&self) -> &ConsoleSessions {
        &self.console
    }

    pub fn key_source(&self) -> &KeySource {
        &self.source
    }

    /// Checks a presented bearer key. Both sides are hashed first so the comparison is constant-time and
    /// length-independent, and every configured key is compared (no early exit reveals which one matched).
    pub fn check_api_key(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&ApiKey> = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.map(|k| Caller::ApiKey { fingerprint: k.fingerprint.clone() })
    }

    /// A JoinToken for this attendee, expiring at `min(meeting_ends_at, now + ttl)` (unix seconds).
    pub fn issue_join_token(&self, meeting: MeetingId, attendee: AttendeeId, meeting_ends_at: Option<i64>) -> String {
        self.issue_for_attendee(KIND_JOIN, meeting, attendee, meeting_ends_at)
    }

    /// Relied on by `http::ws`: signature, kind and expiry. The caller still checks the store (deleted meetings).
    pub fn verify_join_token(&self, token: &str) -> Result<JoinClaims, AuthError> {
        self.verify_for_attendee(KIND_JOIN, token)
    }

    /// A token of `kind` for one attendee, expiring at `min(meeting_ends_at, now + ttl)` (unix seconds).
    fn issue_for_attendee(&self, kind: u8, meeting: MeetingId, attendee: AttendeeId, meeting_ends_at: Option<i64>) -> String {
        let ttl_end = now().saturating_add(self.join_token_ttl_secs);
        let expires_at = meeting_ends_at.map_or(ttl_end, |end| end.min(ttl_end));
        self.sign(kind, meeting, Some(attendee), expires_at)
    }

    fn verify_for_attendee(&self, kind: u8, token: &str) -> Result<JoinClaims, AuthError> {
        let (meeting_id, attendee, expires_at) = self.open(kind, token)?;
        let attendee_id = attendee.ok_or(AuthError::Malformed)?;
        if now() >= expires_at {
            return Err(AuthError::Expired);
        }
        Ok(JoinClaims { meeting_id, attendee_id, expires_at })
    }

    /// A Chime attendee's presence token: lets its page report joining, staying and leaving (usage), for this
    /// meeting and attendee only. Chime's own JoinToken is Chime's, so the gateway cannot check that one.
    pub fn issue_presence_token(&self, meeting: MeetingId, attendee: AttendeeId, meeting_ends_at: Option<i64>) -> String {
        self.issue_for_attendee(KIND_PRESENCE, meeting, attendee, meeting_ends_at)
    }

    pub fn verify_presence_token(&self, token: &str) -> Result<JoinClaims, AuthError> {
        self.verify_for_attendee(KIND_PRESENCE, token)
    }

    /// An invite for one meeting (carried in the patient's link): it lives until the meeting's end plus the
    /// invite grace when the caller knows that end (an appointment, a meeting created with `endsAt`), otherwise
    /// for the invite TTL.
    pub fn issue_invite(&self, meeting: MeetingId, ends_at: Option<chrono::DateTime<chrono::Utc>>) -> String {
        self.sign(KIND_INVITE, meeting, None, self.invite_expiry(ends_at))
    }

    /// When an invite issued now expires (unix seconds).
    pub fn invite_expiry(&self, ends_at: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
        match ends_at {
            Some(end) => end.timestamp().saturating_add(self.invites.grace.as_secs() as i64),
            None => now().saturating_add(self.invites.ttl.as_secs() as i64),
        }
    }

    /// The meeting an invite is for. Links signed before invites expired carry `i64::MAX` and still pass.
    pub fn verify_invite(&self, token: &str) -> Result<MeetingId, AuthError> {
        let (meeting, _, expires_at) = self.open(KIND_INVITE, token)?;
        if now() >= expires_at {
            return Err(AuthError::Expired);
        }
        Ok(meeting)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }

    fn sign(&self, kind: u8, meeting: MeetingId, attendee: Option<AttendeeId>, expires_at: i64) -> String {
        let mut buf = Vec::with_capacity(2 + 32 + 8 + MAC_LEN);
        buf.push(TOKEN_VERSION);
        buf.push(kind);
        buf.extend_from_slice(meeting.as_uuid().as_bytes());
        if let Some(a) = attendee {
            buf.extend_from_slice(a.as_uuid().as_bytes());
        }
        buf.extend_from_slice(&expires_at.to_be_bytes());
        let mut mac = self.mac();
        mac.update(&buf);
        buf.extend_from_slice(&mac.finalize().into_bytes());
        B64.encode(buf)
    }

    fn open(&self, kind: u8, token: &str) -> Result<(MeetingId, Option<AttendeeId>, i64), AuthError> {
        let bytes = B64.decode(token.trim()).map_err(|_| AuthError::Malformed)?;
        let with_attendee = kind != KIND_INVITE;
        let body_len = if with_attendee { 2 + 16 + 16 + 8 } else { 2 + 16 + 8 };
        if bytes.len() != body_len + MAC_LEN || bytes[0] != TOKEN_VERSION || bytes[1] != kind {
            return Err(AuthError::Malformed);
        }
        let (body, tag) = bytes.split_at(body_len);
        let mut mac = self.mac();
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag).map_err(|_| AuthError::BadSignature)?;
        let uuid = |at: usize| Uuid::from_slice(&body[at..at + 16]).map_err(|_| AuthError::Malformed);
        let meeting = MeetingId::from(uuid(2)?);
        let attendee = if with_attendee { Some(AttendeeId::from(uuid(18)?)) } else { None };
        let exp = &body[body_len - 8..];
        let expires_at = i64::from_be_bytes(exp.try_into().map_err(|_| AuthError::Malformed)?);
        Ok((meeting, attendee, expires_at))
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes, base64url: used for generated API keys and signing secrets, console session ids, CSRF
/// tokens and one-time sign-in links.
fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// Reads a one-line secret from `path`, or creates it (mode 0600, parent dirs included) on first start.
/// Returns the secret and whether it was created now.
fn read_or_create_secret_file(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_owned(), false)),
        Ok(_) => anyhow::bail!("{} is empty; delete it to generate a new one", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let value = make();
    write_private(path, &value).with_context(|| format!("writing {}", path.display()))?;
    Ok((value, true))
}

/// Creates `dir` (and parents) if missing; a directory we create is owner-only (0700), because it will hold
/// the database (attendee names), the API key and the signing secret. An existing directory is left as is.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Creates a new file readable by its owner only. `create_new` refuses to follow or clobber an existing file.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(ttl: i64) -> Auth {
        Auth::new(vec!["k".repeat(20), "second-key-0123456789".into()], b"secret".to_vec(), ttl, KeySource::Env { count: 2 })
    }

    #[test]
    fn a_join_token_round_trips_with_its_meeting_and_attendee() {
        let a = auth(60);
        let (m, at) = (MeetingId::new(), AttendeeId::new());
        let claims = a.verify_join_token(&a.issue_join_token(m, at, None)).unwrap();
        assert_eq!((claims.meeting_id, claims.attendee_id), (m, at));
        assert!(claims.expires_at > now());
    }

    #[test]
    fn a_join_token_expires_at_the_meeting_end_when_that_comes_first() {
        let a = auth(3600);
        let end = now() + 10;
        let t = a.issue_join_token(MeetingId::new(), AttendeeId::new(), Some(end));
        assert_eq!(a.verify_join_token(&t).unwrap().expires_at, end);
        let past = a.issue_join_token(MeetingId::new(), AttendeeId::new(), Some(now() - 1));
        assert_eq!(a.verify_join_token(&past), Err(AuthError::Expired));
    }

    #[test]
    fn a_flipped_bit_or_another_secret_breaks_the_signature() {
        let a = auth(60);
        let t = a.issue_join_token(MeetingId::new(), AttendeeId::new(), None);
        let mut bytes = B64.decode(&t).unwrap();
        bytes[5] ^= 1;
        assert_eq!(a.verify_join_token(&B64.encode(&bytes)), Err(AuthError::BadSignature));
        let other = Auth::new(vec![], b"other".to_vec(), 60, KeySource::Env { count: 0 });
        assert_eq!(other.verify_join_token(&t), Err(AuthError::BadSignature));
        assert_eq!(a.verify_join_token("not base64!"), Err(AuthError::Malformed));
    }

    #[test]
    fn only_an_invite_makes_a_guest() {
        assert_eq!(Caller::ApiKey { fingerprint: "0123456789ab".into() }.attendee_role(), Role::Host);
        assert_eq!(Caller::Console.attendee_role(), Role::Host);
        assert_eq!(Caller::Invite { meeting_id: MeetingId::new() }.attendee_role(), Role::Guest);
    }

    #[test]
    fn an_invite_is_not_a_join_token_and_vice_versa() {
        let a = auth(60);
        let m = MeetingId::new();
        let invite = a.issue_invite(m, None);
        assert_eq!(a.verify_invite(&invite), Ok(m));
        assert_eq!(a.verify_join_token(&invite), Err(AuthError::Malformed));
        let join = a.issue_join_token(m, AttendeeId::new(), None);
        assert_eq!(a.verify_invite(&join), Err(AuthError::Malformed));
    }

    #[test]
    fn an_invite_lives_until_the_end_plus_the_grace_or_for_the_ttl_and_old_links_still_work() {
        let lifetime = InviteLifetime { ttl: std::time::Duration::from_secs(3600), grace: std::time::Duration::from_secs(600) };
        let a = auth(60).with_invite_lifetime(lifetime);
        let m = MeetingId::new();
        let end = chrono::Utc::now() + chrono::Duration::minutes(30);
        assert_eq!(a.invite_expiry(Some(end)), end.timestamp() + 600);
        assert!((a.invite_expiry(None) - (now() + 3600)).abs() <= 1);
        // Ended 11 minutes ago: past its 10-minute grace.
        let ended = chrono::Utc::now() - chrono::Duration::minutes(11);
        assert_eq!(a.verify_invite(&a.issue_invite(m, Some(ended))), Err(AuthError::Expired));
        let ended_recently = chrono::Utc::now() - chrono::Duration::minutes(9);
        assert_eq!(a.verify_invite(&a.issue_invite(m, Some(ended_recently))), Ok(m));
        // A link from before invites expired.
        assert_eq!(a.verify_invite(&a.sign(KIND_INVITE, m, None, i64::MAX)), Ok(m));
    }

    #[test]
    fn a_presence_token_is_neither_a_join_token_nor_an_invite() {
        let a = auth(60);
        let (m, at) = (MeetingId::new(), AttendeeId::new());
        let presence = a.issue_presence_token(m, at, None);
        let claims = a.verify_presence_token(&presence).unwrap();
        assert_eq!((claims.meeting_id, claims.attendee_id), (m, at));
        assert_eq!(a.verify_join_token(&presence), Err(AuthError::Malformed));
        assert_eq!(a.verify_invite(&presence), Err(AuthError::Malformed));
        assert_eq!(a.verify_presence_token(&a.issue_join_token(m, at, None)), Err(AuthError::Malformed));
        assert_eq!(a.verify_presence_token(&a.issue_presence_token(m, at, Some(now() - 1))), Err(AuthError::Expired));
    }

    #[test]
    fn api_keys_match_exactly_and_report_a_fingerprint_not_the_key() {
        let a = auth(60);
        let caller = a.check_api_key(&"k".repeat(20)).unwrap();
        let actor = caller.audit_actor();
        assert!(actor.starts_with("api-key:") && !actor.contains("kkkk"));
        assert!(a.check_api_key(&"k".repeat(19)).is_none());
        assert!(a.check_api_key("").is_none());
        assert_ne!(caller, a.check_api_key("second-key-0123456789").unwrap());
    }

    #[test]
    fn a_generated_key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(API_KEY_FILE);
        let (k1, created) = read_or_create_secret_file(&path, || random_token(32)).unwrap();
        assert!(created);
        let (k2, created) = read_or_create_secret_file(&path, || unreachable!()).unwrap();
        assert_eq!((k1, created), (k2, false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
