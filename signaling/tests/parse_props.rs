//! Property tests of the client frame parser (`serde_json` into `ClientMessage`, what the gateway's socket
//! does with every text frame): arbitrary text and bytes never panic; a frame that parses is one the
//! protocol's rules (`strategies::expected_client_message`, written without serde) call valid, and it
//! round-trips; arbitrary and near-valid JSON parse exactly when those rules say so.

mod strategies;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use signaling::ClientMessage;
use strategies::*;

/// A parsed message serialises to JSON that parses back to the same message, and to a JSON object the
/// rules accept as that message.
fn assert_round_trips(msg: &ClientMessage) -> Result<(), TestCaseError> {
    let text = serde_json::to_string(msg).map_err(|e| TestCaseError::fail(format!("{msg:?} does not serialise: {e}")))?;
    let again: ClientMessage =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{text} does not parse back: {e}")))?;
    prop_assert_eq!(&again, msg, "{}", text);
    let value: Value = serde_json::from_str(&text).unwrap();
    prop_assert!(value.is_object(), "{}", text);
    prop_assert_eq!(expected_client_message(&value), Some(msg.clone()), "{}", text);
    Ok(())
}

/// What holds for any text: no panic; if it parses as a message, it is a JSON object the rules accept as
/// that very message. With `exact`, the converse too (the text has no duplicate keys, which serde refuses
/// and a `Value` silently collapses).
fn check_text(text: &str, exact: bool) -> Result<(), TestCaseError> {
    let parsed = serde_json::from_str::<ClientMessage>(text);
    let value = serde_json::from_str::<Value>(text);
    match (&parsed, &value) {
        (Ok(msg), Ok(v)) => {
            prop_assert_eq!(expected_client_message(v), Some(msg.clone()), "{:?}", text);
            assert_round_trips(msg)?;
        }
        (Ok(msg), Err(e)) => prop_assert!(false, "{text:?} is not JSON ({e}) yet parsed as {msg:?}"),
        (Err(_), Ok(v)) if exact => prop_assert_eq!(expected_client_message(v), None, "{:?}", text),
        (Err(_), _) => {}
    }
    Ok(())
}

/// The same rule for a JSON value: it parses (from the value and from its text) exactly when the rules say
/// so, to the message they say, which round-trips.
fn check_value(v: &Value) -> Result<(), TestCaseError> {
    let expected = expected_client_message(v);
    let from_value = serde_json::from_value::<ClientMessage>(v.clone()).ok();
    let from_text = serde_json::from_str::<ClientMessage>(&v.to_string()).ok();
    prop_assert_eq!(&from_value, &expected, "{}", v);
    prop_assert_eq!(&from_text, &expected, "{}", v);
    if let Some(msg) = &expected {
        assert_round_trips(msg)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_parses_only_to_valid_messages(text in any::<String>()) {
        check_text(&text, false)?;
    }

    #[test]
    fn almost_json_never_panics_and_parses_only_to_valid_messages(text in jsonish_text()) {
        check_text(&text, false)?;
    }

    #[test]
    fn damaged_frames_never_panic_and_parse_only_to_valid_messages(text in mutated_text()) {
        check_text(&text, false)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = serde_json::from_slice::<ClientMessage>(&bytes) {
            let text = std::str::from_utf8(&bytes);
            prop_assert!(text.is_ok(), "invalid UTF-8 parsed as {:?}", msg);
            check_text(text.unwrap(), false)?;
        }
    }

    #[test]
    fn arbitrary_json_parses_exactly_when_the_rules_say_so(v in arb_json()) {
        check_value(&v)?;
    }

    #[test]
    fn near_valid_frames_parse_exactly_when_the_rules_say_so(v in near_valid_client_message()) {
        check_value(&v)?;
    }

    #[test]
    fn every_message_round_trips(msg in arb_client_message()) {
        assert_round_trips(&msg)?;
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack(
        depth in 1usize..4000,
        (opener, closer) in prop::sample::select(&[
            ("[", "]"),
            ("{\"a\":", "}"),
            ("{\"type\":\"candidate\",\"candidate\":", "}"),
            ("{\"type\":\"ping\",\"ts\":[", "]}"),
        ][..]),
        closed in any::<bool>(),
    ) {
        let mut text = opener.repeat(depth);
        if closed {
            text.push_str("null");
            text.push_str(&closer.repeat(depth));
        }
        check_text(&text, true)?;
    }
}

/// The near-valid generator is only worth its name if it makes both valid and invalid frames, in good
/// numbers, and of every type.
#[test]
fn near_valid_frames_are_often_valid_and_often_not() {
    let mut runner = TestRunner::deterministic();
    let strategy = near_valid_client_message();
    let (mut valid, mut types) = (0, std::collections::BTreeSet::new());
    let n = 2000;
    for _ in 0..n {
        let v = strategy.new_tree(&mut runner).unwrap().current();
        if let Some(msg) = expected_client_message(&v) {
            valid += 1;
            types.insert(v["type"].as_str().unwrap().to_owned());
            let _ = msg;
        }
    }
    assert!(valid > n / 10 && valid < n * 9 / 10, "{valid} of {n} valid");
    assert_eq!(types.len(), TYPES.len(), "valid frames of every type: {types:?}");
}

/// The rules above, checked on the examples the protocol documents, so that the oracle itself is right.
#[test]
fn the_rules_agree_with_the_documented_examples() {
    use serde_json::json;
    let ok = [
        json!({"type": "join", "token": "t", "videoMuted": true}),
        json!({"type": "candidate", "candidate": null}),
        json!({"type": "candidate"}),
        json!({"type": "candidate", "candidate": {"candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0}}),
        json!({"type": "leave", "reason": "tab closed"}),
        json!({"type": "ping"}),
        json!({"type": "ping", "ts": u64::MAX}),
        json!({"type": "offer", "sdp": "v=0", "restart": true}),
        json!({"type": "mediaState", "audioMuted": true, "videoMuted": false}),
    ];
    for v in ok {
        assert!(expected_client_message(&v).is_some(), "{v}");
        assert!(serde_json::from_value::<ClientMessage>(v.clone()).is_ok(), "{v}");
    }
    let bad = [
        json!({"type": "explode"}),
        json!({"type": "join", "token": 5}),
        json!({"type": "join", "token": "t", "audioMuted": null}),
        json!({"type": "offer"}),
        json!({"type": "offer", "sdp": "v=0", "restart": null}),
        json!({"sdp": "v=0"}),
        json!([1, 2]),
        json!({"type": "ping", "ts": 1.0}),
        json!({"type": "ping", "ts": -1}),
        json!({"type": "candidate", "candidate": {"candidate": "c", "sdpMLineIndex": 65536}}),
        json!({"type": "mediaState", "audioMuted": true}),
    ];
    for v in bad {
        assert!(expected_client_message(&v).is_none(), "{v}");
        assert!(serde_json::from_value::<ClientMessage>(v.clone()).is_err(), "{v}");
    }
}
