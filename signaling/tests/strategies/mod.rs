//! Input generators for the property tests, and an independent statement of which JSON is a valid client
//! frame. Used by this crate's `parse_props` and, through a `#[path]` include, by the gateway's property tests
//! of its socket and its HTTP API (`tests/props_signaling.rs`, `tests/props_api.rs`).
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value};
use signaling::{ClientMessage, IceCandidate};

/// Every client frame `type`.
pub const TYPES: [&str; 8] = ["join", "offer", "answer", "candidate", "mediaState", "requestKeyframe", "leave", "ping"];
/// Every field name a client frame (or its candidate) has.
pub const FIELDS: [&str; 9] =
    ["token", "audioMuted", "videoMuted", "sdp", "candidate", "ts", "sdpMid", "sdpMLineIndex", "usernameFragment"];

/// Strings of every kind: any Unicode (control characters, quotes, backslashes, astral planes), printable
/// text, ASCII words, and the empty string.
pub fn arb_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "\\PC{0,24}",
        2 => "[a-zA-Z0-9 _.:-]{0,16}",
        1 => Just(String::new()),
    ]
    .boxed()
}

/// Numbers of every kind serde_json keeps apart: negative and positive integers over the whole i64/u64
/// range, small ones, and finite floats (integral ones like `5.0` included).
pub fn arb_number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        (-1000i64..1000).prop_map(|n| Value::from(n as f64)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
    .boxed()
}

pub fn arb_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_string().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value (nested up to a few levels), with object keys drawn from `keys` half of the time so that
/// known names meet values of the wrong type.
pub fn arb_json_with_keys(keys: &'static [&'static str]) -> BoxedStrategy<Value> {
    let key = prop_oneof![select(keys).prop_map(str::to_owned), arb_string()];
    arb_leaf()
        .prop_recursive(5, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

/// Any JSON value whose keys are sometimes the protocol's own names.
pub fn arb_json() -> BoxedStrategy<Value> {
    static KEYS: [&str; 11] =
        ["type", "token", "audioMuted", "videoMuted", "sdp", "restart", "candidate", "ts", "sdpMid", "sdpMLineIndex", "usernameFragment"];
    arb_json_with_keys(&KEYS)
}

/// A value for one field of a near-valid frame: right or wrong type, null, out of range, nested.
fn field_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => arb_string().prop_map(Value::String),
        2 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        2 => arb_number(),
        2 => near_valid_candidate(),
        1 => arb_json(),
    ]
    .boxed()
}

/// An ICE candidate object with some of its fields, each of a random type, maybe an unknown one too.
fn near_valid_candidate() -> BoxedStrategy<Value> {
    let value = prop_oneof![
        3 => arb_string().prop_map(Value::String),
        1 => Just(Value::Null),
        2 => (0u64..70_000).prop_map(Value::from),
        1 => arb_leaf(),
    ];
    let key = prop_oneof![
        6 => select(&["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"][..]).prop_map(str::to_owned),
        1 => arb_string(),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())).boxed()
}

/// A frame that is nearly a client message, made three ways: a real `type` (sometimes an unknown one, a
/// non-string or none) with some of the protocol's fields holding values of random types; a valid message
/// with a field removed, retyped or added; and the positional (array) form `["offer", "v=0"]` that serde's
/// derives would accept for an object.
pub fn near_valid_client_message() -> BoxedStrategy<Value> {
    let tag = prop_oneof![
        10 => select(&TYPES[..]).prop_map(|t| Some(Value::from(t))),
        1 => arb_string().prop_map(|s| Some(Value::String(s))),
        1 => arb_leaf().prop_map(Some),
        1 => Just(None),
    ];
    let key = || {
        prop_oneof![
            6 => select(&FIELDS[..]).prop_map(str::to_owned),
            1 => arb_string(),
        ]
    };
    let random_fields = (tag, prop::collection::vec((key(), field_value()), 0..6)).prop_map(|(tag, fields)| {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        match tag {
            Some(t) => object.insert("type".into(), t),
            None => object.remove("type"),
        };
        Value::Object(object)
    });
    #[derive(Debug, Clone)]
    enum Edit {
        Remove(prop::sample::Index),
        Set(String, Value),
    }
    let edit = prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        (key(), field_value()).prop_map(|(k, v)| Edit::Set(k, v)),
    ];
    let edited = (arb_client_message(), prop::collection::vec(edit, 0..3)).prop_map(|(msg, edits)| {
        let mut v = serde_json::to_value(&msg).unwrap();
        let object = v.as_object_mut().unwrap();
        for e in edits {
            match e {
                Edit::Remove(i) => {
                    let keys: Vec<String> = object.keys().cloned().collect();
                    if !keys.is_empty() {
                        object.remove(i.get(&keys));
                    }
                }
                Edit::Set(k, value) => {
                    object.insert(k, value);
                }
            }
        }
        v
    });
    let positional = (select(&TYPES[..]), prop::collection::vec(field_value(), 0..5)).prop_map(|(t, mut values)| {
        values.insert(0, Value::from(t));
        Value::Array(values)
    });
    prop_oneof![4 => random_fields, 4 => edited, 1 => positional].boxed()
}

/// A valid client message of any kind, with arbitrary strings and numbers in it.
pub fn arb_client_message() -> BoxedStrategy<ClientMessage> {
    let candidate = (arb_string(), proptest::option::of(arb_string()), proptest::option::of(any::<u16>()), proptest::option::of(arb_string()))
        .prop_map(|(candidate, sdp_mid, sdp_mline_index, username_fragment)| IceCandidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
            username_fragment,
        });
    prop_oneof![
        (arb_string(), any::<bool>(), any::<bool>())
            .prop_map(|(token, audio_muted, video_muted)| ClientMessage::Join { token, audio_muted, video_muted }),
        (arb_string(), any::<bool>()).prop_map(|(sdp, restart)| ClientMessage::Offer { sdp, restart }),
        arb_string().prop_map(|sdp| ClientMessage::Answer { sdp }),
        proptest::option::of(candidate).prop_map(|candidate| ClientMessage::Candidate { candidate }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(audio_muted, video_muted)| ClientMessage::MediaState { audio_muted, video_muted }),
        Just(ClientMessage::RequestKeyframe),
        Just(ClientMessage::Leave),
        proptest::option::of(any::<u64>()).prop_map(|ts| ClientMessage::Ping { ts }),
    ]
    .boxed()
}

/// Text built from JSON's own tokens and the protocol's names, so that the parser gets deep into almost-JSON:
/// unbalanced brackets, bad escapes, lone surrogates, numbers out of range, trailing commas, duplicate keys.
pub fn jsonish_text() -> BoxedStrategy<String> {
    let token = prop_oneof![
        4 => select(&[
            "{", "}", "[", "]", ":", ",", " ", "\n", "\"", "\\", "null", "true", "false", "0", "-0", "1.5e3", "-1",
            "65535", "65536", "18446744073709551615", "18446744073709551616", "-9223372036854775809", "1e999",
            "\"\\ud800\"", "\"\\u0000\"", "\"\\x\"", "\"type\"", "\"token\"", "\"sdp\"", "\"ts\"", "\"candidate\"",
            "\"audioMuted\"", "\"sdpMLineIndex\"", "\"join\"", "\"offer\"", "\"ping\"", "\"leave\"", "\"mediaState\"",
            "{\"type\":\"ping\"}", "{\"type\":\"join\",\"token\":",
        ][..])
        .prop_map(str::to_owned),
        1 => arb_string().prop_map(|s| serde_json::to_string(&s).unwrap()),
        1 => arb_string(),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat()).boxed()
}

/// Serialised near-valid frames, then damaged: cut short, a character inserted or removed.
pub fn mutated_text() -> BoxedStrategy<String> {
    (near_valid_client_message(), any::<prop::sample::Index>(), 0u8..3, any::<char>())
        .prop_map(|(value, at, how, c)| {
            let mut text = value.to_string();
            let boundaries: Vec<usize> = (0..=text.len()).filter(|i| text.is_char_boundary(*i)).collect();
            let i = *at.get(&boundaries);
            match how {
                0 => text.truncate(i),
                1 => text.insert(i, c),
                _ => {
                    if i < text.len() {
                        text.remove(i);
                    }
                }
            }
            text
        })
        .boxed()
}

/// The message a JSON value is, by the protocol's rules as the signaling crate documents them, written
/// without serde: every frame is an object with a known `type`; required fields must be present with their
/// type; optional ones may be absent or null, except the flags (`join`'s two, `offer`'s `restart`), which default to false when
/// absent but are not nullable; unknown fields are ignored. None: the value is not a valid frame.
pub fn expected_client_message(v: &Value) -> Option<ClientMessage> {
    let o = v.as_object()?;
    let string = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let flag = |k: &str| match o.get(k) {
        None => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    };
    let required_flag = |k: &str| o.get(k).and_then(Value::as_bool);
    // Absent or null is None; otherwise it must have the type.
    fn optional<T>(o: &Map<String, Value>, k: &str, f: impl Fn(&Value) -> Option<T>) -> Option<Option<T>> {
        match o.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(v) => f(v).map(Some),
        }
    }
    let message = match o.get("type")?.as_str()? {
        "join" => ClientMessage::Join { token: string(o, "token")?, audio_muted: flag("audioMuted")?, video_muted: flag("videoMuted")? },
        "offer" => ClientMessage::Offer { sdp: string(o, "sdp")?, restart: flag("restart")? },
        "answer" => ClientMessage::Answer { sdp: string(o, "sdp")? },
        "candidate" => {
            let candidate = optional(o, "candidate", |c| {
                let c = c.as_object()?;
                let text = |v: &Value| v.as_str().map(str::to_owned);
                Some(IceCandidate {
                    candidate: string(c, "candidate")?,
                    sdp_mid: optional(c, "sdpMid", text)?,
                    sdp_mline_index: optional(c, "sdpMLineIndex", |v| v.as_u64().and_then(|n| u16::try_from(n).ok()))?,
                    username_fragment: optional(c, "usernameFragment", text)?,
                })
            })?;
            ClientMessage::Candidate { candidate }
        }
        "mediaState" => {
            ClientMessage::MediaState { audio_muted: required_flag("audioMuted")?, video_muted: required_flag("videoMuted")? }
        }
        "requestKeyframe" => ClientMessage::RequestKeyframe,
        "leave" => ClientMessage::Leave,
        "ping" => ClientMessage::Ping { ts: optional(o, "ts", Value::as_u64)? },
        _ => return None,
    };
    Some(message)
}
