//! JSON request bodies: what they may be, and what a refused one is told.
//!
//! A body is a JSON object. serde's derives also read a struct from its positional form (`["Jordan", null, …]`)
//! and an internally tagged enum from `["get-meeting", "<id>"]`; `object_only!` makes a type whose derive is
//! `#[serde(remote = "Self")]` read from an object and nothing else (`signaling::object`, shared with the frames), so any other JSON is a 400 like every
//! body of the wrong shape.
//!
//! A refusal names where and what was wrong (`meetingId: invalid type, expected a string`), never the value:
//! serde's own messages quote it (`unknown variant \`Pat Smith's chart\``, `unknown field \`…\``,
//! `invalid type: string "…"`), and bodies carry names and contacts that must not come back in an error an EHR
//! may log.

use axum::extract::rejection::JsonRejection;
use std::error::Error as _;

/// `object_only!(Type, "a JSON object …")`: `Deserialize` for `Type`, whose derive carries
/// `#[serde(remote = "Self")]`, from a JSON object only.
macro_rules! object_only {
    ($ty:ty, $expecting:literal) => {
        impl signaling::object::FromObject for $ty {
            const EXPECTING: &'static str = $expecting;
            fn from_object<'de, D: serde::Deserializer<'de>>(object: D) -> Result<Self, D::Error> {
                // The inherent function `remote = "Self"` generated: the derived deserializer.
                <$ty>::deserialize(object)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                signaling::object::deserialize_object(deserializer)
            }
        }
    };
}
pub(crate) use object_only;

type ParseError = serde_path_to_error::Error<serde_json::Error>;

/// What the caller is told about a body the JSON extractor refused for its syntax or shape.
pub fn refusal(rejection: &JsonRejection) -> String {
    let mut source = rejection.source();
    let parse = loop {
        match source {
            None => break None,
            Some(e) => match e.downcast_ref::<ParseError>() {
                Some(p) => break Some(p),
                None => source = e.source(),
            },
        }
    };
    match (rejection, parse) {
        (JsonRejection::JsonSyntaxError(_), Some(e)) => format!("the request body is not valid JSON{}", position(e.inner())),
        (JsonRejection::JsonSyntaxError(_), None) => "the request body is not valid JSON".to_owned(),
        (JsonRejection::JsonDataError(_), Some(e)) => {
            let (detail, unknown_key) = detail(e.inner());
            let path = path(e.path(), unknown_key).map(|p| format!("{p}: ")).unwrap_or_default();
            format!("the request body does not have the expected fields and types: {path}{detail}{}", position(e.inner()))
        }
        (JsonRejection::JsonDataError(_), None) => "the request body does not have the expected fields and types".to_owned(),
        _ => "the request body could not be read".to_owned(),
    }
}

fn position(e: &serde_json::Error) -> String {
    if e.line() == 0 { String::new() } else { format!(" (line {}, column {})", e.line(), e.column()) }
}

/// serde's message without the client's value, and whether it is about a key the client made up (the last
/// segment of the path is that key then).
fn detail(e: &serde_json::Error) -> (String, bool) {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    // The phrasings of serde::de::Error's provided methods: the value comes first, what was expected last.
    for (prefix, unknown_key) in [("invalid type", false), ("invalid value", false), ("unknown variant", false), ("unknown field", true)] {
        if message.starts_with(prefix) {
            let expected = message.rfind(", expected ").map(|i| &message[i..]).unwrap_or("");
            return (format!("{prefix}{expected}"), unknown_key);
        }
    }
    // Names of the type's own fields, or of one of its types.
    let ours = ["missing field `", "duplicate field `", "invalid length ", "data did not match any variant of untagged enum "];
    if ours.iter().any(|p| message.starts_with(p)) {
        return (message.to_owned(), false);
    }
    ("a value is not acceptable".to_owned(), false)
}

/// The path to the refused value, when every step of it is one of the type's own names (a key the client
/// made up is dropped, along with the whole path should another such key appear).
fn path(path: &serde_path_to_error::Path, unknown_key: bool) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut segments: Vec<&Segment> = path.iter().collect();
    if unknown_key {
        segments.pop();
    }
    let name = |s: &str| {
        (1..=40).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if name(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } if name(variant) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::body::Body;
    use axum::extract::FromRequest;
    use axum::http::Request;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(remote = "Self", deny_unknown_fields)]
    struct Visit {
        client_name: String,
        #[serde(default)]
        duration_minutes: Option<i64>,
    }
    object_only!(Visit, "a JSON object with the visit's fields");

    async fn refused(body: &str) -> String {
        let req = Request::post("/").header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap();
        match Json::<Visit>::from_request(req, &()).await {
            Ok(Json(v)) => panic!("{body} was accepted: {v:?}"),
            Err(r) => refusal(&r),
        }
    }

    #[tokio::test]
    async fn refusals_name_the_field_and_the_rule_never_the_value() {
        let m = refused(r#"{"client_name": "Jordan", "duration_minutes": "Pat Smith"}"#).await;
        assert_eq!(m, "the request body does not have the expected fields and types: duration_minutes: invalid type, expected i64 (line 1, column 57)");
        let m = refused(r#"{"client_name": "Jordan", "Pat Smith": 1}"#).await;
        assert!(m.contains("unknown field, expected") && !m.contains("Pat Smith"), "{m}");
        let m = refused(r#"{"client_name": "Jordan", "duration_minutes": 18446744073709551615}"#).await;
        assert!(m.contains("duration_minutes: invalid value, expected i64") && !m.contains("18446744073709551615"), "{m}");
        let m = refused(r#"{"duration_minutes": 5}"#).await;
        assert!(m.contains("missing field `client_name`"), "{m}");
        let m = refused(r#"{"client_name": "Pat Smith", "duration_minutes": tru}"#).await;
        assert_eq!(m, "the request body is not valid JSON (line 1, column 53)");
    }

    #[tokio::test]
    async fn only_an_object_is_a_body() {
        for body in [r#"["Jordan", 45]"#, r#"["Jordan"]"#, "5", r#""Jordan""#, "null"] {
            let m = refused(body).await;
            assert!(m.contains("invalid type, expected a JSON object with the visit's fields"), "{body}: {m}");
            assert!(!m.contains("Jordan"), "{m}");
        }
        let ok: Visit = serde_json::from_str(r#"{"client_name": "Jordan"}"#).unwrap();
        assert_eq!(ok.client_name, "Jordan");
    }
}
