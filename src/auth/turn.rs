//! TURN credentials for the join page, by the TURN REST convention (draft-uberti-behave-turn-rest, what coturn's
//! `use-auth-secret` / `static-auth-secret` checks): the username is `<expiry unix time>:<user>`, the password is
//! base64(HMAC-SHA1(shared secret, username)). The TURN server needs only the secret, not a list of users, and a
//! leaked credential dies at its expiry.
//!
//! The user part is an opaque tag derived from the attendee id, never a name: TURN servers log usernames.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use signaling::IceServer;
use crate::config::TurnConfig;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `iceServers` entry for one participant (`user`: `opaque_user` of it), valid for the TURN config's `ttl`.
pub fn ice_server(turn: &TurnConfig, user: &str) -> IceServer {
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + turn.ttl;
    let (username, credential) = credential(&turn.secret, expires.as_secs(), user);
    IceServer { urls: turn.urls.clone(), username: Some(username), credential: Some(credential) }
}

/// An opaque, stable tag for `id` (a TURN server's logs must not link to a patient by name or id).
pub fn opaque_user(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// TURN REST username and password for `user`, expiring at `expires` (unix seconds).
pub fn credential(secret: &[u8], expires: u64, user: &str) -> (String, String) {
    let username = format!("{expires}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// The password a TURN server derives for `username` from the shared secret (the embedded server checks with it).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The value coturn's `turnadmin`-style computation gives: HMAC-SHA1 over the username, standard base64.
    /// (Reference computed independently: `printf '1700000000:user' | openssl dgst -sha1 -hmac secret -binary | base64`.)
    #[test]
    fn credentials_follow_the_turn_rest_convention() {
        let (username, password) = credential(b"secret", 1_700_000_000, "user");
        assert_eq!(username, "1700000000:user");
        assert_eq!(password, "I/MZeIG6MwzOV8Uubr9liB2556o=");
    }

    #[test]
    fn each_participant_gets_an_expiring_credential_without_its_id() {
        let turn = TurnConfig { urls: vec!["turn:127.0.0.1:3478".into()], secret: b"s3cret".to_vec(), ttl: Duration::from_secs(600) };
        let id = "5b2c0a7e-0000-4000-8000-000000000001";
        let server = ice_server(&turn, &opaque_user(id));
        let username = server.username.unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let expiry: u64 = expiry.parse().unwrap();
        assert!((now + 590..=now + 610).contains(&expiry), "{expiry} vs {now}");
        assert!(!user.contains("5b2c0a7e") && user.len() == 16, "{user}");
        assert_eq!(server.credential.unwrap(), credential(b"s3cret", expiry, user).1);
        assert!(!format!("{turn:?}").contains("s3cret"), "the secret never reaches a log line");
    }
}
