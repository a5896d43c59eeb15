//! Who may use the embedded TURN server: the holder of an unexpired TURN REST credential, as `auth::turn` mints
//! one for each participant (`<expiry>:<tag>`, password HMAC-SHA1(secret, username)). The TURN engine
//! (turn-server-proto) only knows a table of users, so the gate reads the USERNAME of each request before the
//! engine does: an unexpired name is entered into the table with the password the secret gives it, and a request
//! naming an expired credential is dropped, even when the engine already knows the name. The engine still checks
//! every request's MESSAGE-INTEGRITY itself: the gate never admits anyone, it only decides whom the engine may
//! know.

use crate::auth::turn::rest_password;
use std::collections::HashMap;
use turn_server_proto::stun::types::attribute::Username;
use turn_server_proto::stun::types::message::{Message, MessageClass};

/// What to do with one message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the engine.
    Pass,
    /// Enter this user into the engine's table first, then hand it over.
    Register { username: String, password: String },
    /// It names an expired or malformed credential: the client gets no answer.
    Drop,
}

pub struct Gate {
    secret: Vec<u8>,
    /// The names entered into the engine, with their expiry (unix seconds).
    known: HashMap<String, u64>,
}

impl Gate {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret, known: HashMap::new() }
    }

    /// Judges one whole message (a datagram, or a frame read off a stream) at `now` (unix seconds).
    pub fn check(&mut self, frame: &[u8], now: u64) -> Verdict {
        // ChannelData and anything unparsable go to the engine, which knows their allocation or drops them.
        let Ok(msg) = Message::from_bytes(frame) else { return Verdict::Pass };
        if !msg.has_class(MessageClass::Request) {
            return Verdict::Pass;
        }
        let Ok(user) = msg.attribute::<Username>() else { return Verdict::Pass };
        let username = user.username();
        let Some(expiry) = username.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()) else {
            return Verdict::Drop;
        };
        if expiry <= now {
            return Verdict::Drop;
        }
        if self.known.contains_key(username) {
            return Verdict::Pass;
        }
        self.known.insert(username.to_owned(), expiry);
        Verdict::Register { username: username.to_owned(), password: rest_password(&self.secret, username) }
    }

    /// How many names the engine was told about that have expired by `now` (the engine cannot forget one, so
    /// they are only dropped with the engine: see `Engine::renew_idle`).
    pub fn expired(&self, now: u64) -> usize {
        self.known.values().filter(|&&e| e <= now).count()
    }

    /// Names the engine knows.
    #[cfg(test)]
    pub fn known(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::turn::credential;
    use turn_server_proto::stun::types::message::{MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId};
    use turn_server_proto::types::message::{ALLOCATE, REFRESH};

    fn request(method: turn_server_proto::stun::types::message::Method, username: Option<&str>) -> Vec<u8> {
        let mut msg = Message::builder(
            MessageType::from_class_method(MessageClass::Request, method),
            TransactionId::generate(),
            MessageWriteVec::new(),
        );
        if let Some(u) = username {
            msg.add_attribute(&Username::new(u).unwrap()).unwrap();
        }
        msg.finish()
    }

    #[test]
    fn an_unexpired_credential_is_entered_once_with_the_password_the_secret_gives() {
        let mut gate = Gate::new(b"s3cret".to_vec());
        let (username, password) = credential(b"s3cret", 2_000, "0123456789abcdef");
        let verdict = gate.check(&request(ALLOCATE, Some(&username)), 1_000);
        assert_eq!(verdict, Verdict::Register { username: username.clone(), password });
        assert_eq!(gate.check(&request(REFRESH, Some(&username)), 1_500), Verdict::Pass);
        assert_eq!(gate.known(), 1);
    }

    #[test]
    fn an_expired_or_malformed_name_is_dropped_even_when_known() {
        let mut gate = Gate::new(b"s3cret".to_vec());
        let (username, _) = credential(b"s3cret", 2_000, "tag");
        assert!(matches!(gate.check(&request(ALLOCATE, Some(&username)), 1_000), Verdict::Register { .. }));
        assert_eq!(gate.check(&request(REFRESH, Some(&username)), 2_000), Verdict::Drop, "expired while known");
        assert_eq!(gate.expired(2_000), 1);
        assert_eq!(gate.check(&request(ALLOCATE, Some("alice")), 1_000), Verdict::Drop, "not a REST name");
        assert_eq!(gate.check(&request(ALLOCATE, Some("abc:tag")), 1_000), Verdict::Drop);
    }

    #[test]
    fn messages_without_a_username_are_the_engines_business() {
        let mut gate = Gate::new(b"s3cret".to_vec());
        assert_eq!(gate.check(&request(ALLOCATE, None), 1_000), Verdict::Pass, "the engine answers 401 with a nonce");
        assert_eq!(gate.check(&[0x40, 0x00, 0x00, 0x01, 9], 1_000), Verdict::Pass, "ChannelData");
        assert_eq!(gate.check(b"garbage", 1_000), Verdict::Pass);
        assert_eq!(gate.known(), 0);
    }
}
