//! Property tests of the HTTP API on the real server (loopback): `POST /api/aws-chime-video`,
//! `POST /api/appointments` and `PATCH /api/appointments/{id}` answer every request either with success
//! (when the request is valid: each generator also makes valid ones, which must succeed) or with a 4xx in the
//! contract's JSON shape, `{"success":false,"error":{"code","message"}}`, whose code is the one the input
//! calls for, whose status is that code's, and whose message is not empty and does not repeat the input.
//! Never a 5xx, never a panic; `/healthz` answers ok after every case and the server stops cleanly.
//!
//! A case is a valid request with at most one thing broken (a field of the wrong type, missing, out of
//! Chime's limits; an unknown action; no or a wrong API key; a wrong Content-Type; too large; nested past the
//! parser's limit; invalid UTF-8, a lone surrogate or a number out of range; cut short; an unknown field or
//! a bad Idempotency-Key for appointments), or a body that is not a request at all (bytes, almost-JSON, any
//! JSON, the positional array form).

mod common;
mod props;

use chrono::{Duration, Utc};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use props::strategies::{arb_json_with_keys, arb_leaf, arb_string, jsonish_text};
use props::{Harness, no_echo};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const MEETING: &str = "<<meeting>>";
const RAW: &str = "<<raw>>";
const ACTIONS: [&str; 7] =
    ["create-meeting", "create-attendee", "delete-meeting", "get-meeting", "list-attendees", "get-usage", "attendee-presence"];
/// Every field name of the three bodies (extra fields are drawn from outside these).
static KEYS: [&str; 20] = [
    "action", "appointmentId", "externalMeetingId", "endsAt", "meetingId", "attendeeName", "invite", "from", "to",
    "token", "event", "sessionId", "client_name", "client_email", "client_phone", "practitioner", "start_time",
    "duration_minutes", "modality", "surprise",
];
/// `MAX_BODY_BYTES` of the test server (the default).
const MAX_BODY: usize = 64 * 1024;

/// The contract's 4xx codes and their statuses, with the three this gateway adds (documented in error.rs).
const CODES: [(&str, u16); 10] = [
    ("BadRequest", 400),
    ("Unauthorized", 401),
    ("Forbidden", 403),
    ("NotFound", 404),
    ("MethodNotAllowed", 405),
    ("Conflict", 409),
    ("PayloadTooLarge", 413),
    ("UnsupportedMediaType", 415),
    ("UnprocessableEntity", 422),
    ("Throttling", 429),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Success,
    Error(&'static str),
    /// One of two errors, both right (which comes first is the handler's business).
    OneOf(&'static str, &'static str),
    /// Either (a body the generator cannot judge, e.g. any JSON as a patch, where `{}` is a valid one).
    Either,
}

#[derive(Debug, Clone)]
enum Auth {
    Key,
    Missing,
    Wrong(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Api,
    CreateAppointment,
    PatchAppointment,
}

#[derive(Debug, Clone)]
struct Case {
    what: &'static str,
    auth: Auth,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    /// PATCH: the appointment's id in the path, as sent (None: the real one).
    path_id: Option<String>,
    /// The body, before `MEETING` becomes a live meeting's id and `"<<raw>>"` becomes `raw`.
    body: Body,
    raw: Vec<u8>,
    expect: Expect,
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    /// The serialised JSON cut at this fraction of its length.
    Truncated(Value, prop::sample::Index),
    Bytes(Vec<u8>),
}

// ---------- values ----------

/// Chime's strings (ExternalMeetingId, attendee names): 2–64 printable characters, not all blank.
fn chime_string() -> BoxedStrategy<Value> {
    "\\PC{2,64}".prop_filter("not blank", |s| !s.trim().is_empty()).prop_map(Value::String).boxed()
}

/// Strings outside Chime's limits: too short, too long, blank, or with a control character.
fn chime_string_out_of_limits() -> BoxedStrategy<Value> {
    prop_oneof![
        "\\PC{0,1}",
        "\\PC{65,90}",
        "[ \t]{2,10}".prop_map(|s| s.replace('\t', " ")),
        ("\\PC{1,30}", "[\u{0}-\u{1f}\u{7f}]", "\\PC{0,30}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
    .prop_map(Value::String)
    .boxed()
}

/// Values of any JSON type but string (null included: for required strings, and nullable ones get
/// `not_string_or_null`).
fn not_string() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        props::strategies::arb_number(),
        prop::collection::vec(arb_leaf(), 0..3).prop_map(Value::Array),
        (arb_string(), arb_leaf()).prop_map(|(k, v)| json!({ k: v })),
    ]
    .boxed()
}

fn not_string_or_null() -> BoxedStrategy<Value> {
    not_string().prop_filter("not null", |v| !v.is_null()).boxed()
}

fn any_string_but(forbidden: &'static [&'static str]) -> BoxedStrategy<String> {
    arb_string().prop_filter("not a real name", move |s| !forbidden.contains(&s.as_str())).boxed()
}

fn is_guid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

fn not_a_guid() -> BoxedStrategy<Value> {
    prop_oneof![arb_string(), "[0-9a-f-]{30,40}"].prop_filter("not a GUID", |s| !is_guid(s)).prop_map(Value::String).boxed()
}

fn unknown_guid() -> BoxedStrategy<Value> {
    any::<u128>().prop_map(|n| Value::String(uuid::Uuid::from_u128(n).hyphenated().to_string())).boxed()
}

/// An RFC 3339 time `secs` from now, written with one of several offsets.
fn rfc3339_in(secs: std::ops::Range<i64>) -> BoxedStrategy<Value> {
    (secs, select(&[0i32, -5 * 3600, 5 * 3600 + 1800, 14 * 3600, -12 * 3600][..]))
        .prop_map(|(secs, offset)| {
            let tz = chrono::FixedOffset::east_opt(offset).unwrap();
            Value::String((Utc::now() + Duration::seconds(secs)).with_timezone(&tz).to_rfc3339())
        })
        .boxed()
}

fn not_a_time() -> BoxedStrategy<Value> {
    prop_oneof![arb_string(), Just("tomorrow at noon".to_owned()), Just("2026-13-01T00:00:00Z".to_owned())]
        .prop_filter("not RFC 3339", |s| chrono::DateTime::parse_from_rfc3339(s).is_err())
        .prop_map(Value::String)
        .boxed()
}

fn not_a_date() -> BoxedStrategy<Value> {
    prop_oneof![arb_string(), Just("2026-02-30".to_owned())]
        .prop_filter("not a date", |s| s.parse::<chrono::NaiveDate>().is_err())
        .prop_map(Value::String)
        .boxed()
}

/// An appointment field's person name: 1–100 characters once trimmed, no control characters.
fn person_name() -> BoxedStrategy<Value> {
    "\\PC{1,100}".prop_filter("not blank", |s| !s.trim().is_empty()).prop_map(Value::String).boxed()
}

fn person_name_out_of_limits() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(String::new()),
        "[ ]{1,5}",
        "[a-zA-Z]{101,140}",
        // Inside the name: a tab or newline at an end is trimmed away.
        ("[a-zA-Z]{1,20}", "[\u{1}-\u{1f}]", "[a-zA-Z]{1,20}").prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
    .prop_map(Value::String)
    .boxed()
}

fn email() -> BoxedStrategy<Value> {
    "[a-z0-9]{1,20}(\\.[a-z0-9+_-]{1,10})?@[a-z0-9]{1,20}\\.[a-z]{2,6}".prop_map(Value::String).boxed()
}

fn phone() -> BoxedStrategy<Value> {
    "\\+[1-9][0-9]{7,14}".prop_map(Value::String).boxed()
}

// ---------- one field, one body ----------

#[derive(Clone)]
struct Field {
    name: &'static str,
    required: bool,
    valid: BoxedStrategy<Value>,
    /// Each with the code it must get.
    broken: Vec<(BoxedStrategy<Value>, &'static str)>,
}

fn field(name: &'static str, required: bool, valid: BoxedStrategy<Value>, broken: Vec<(BoxedStrategy<Value>, &'static str)>) -> Field {
    Field { name, required, valid, broken }
}

/// The one thing broken in an otherwise valid request.
#[derive(Debug, Clone)]
enum Break {
    Nothing,
    Set(&'static str, Value, &'static str),
    Remove(&'static str),
    Extra(String, Value),
    Action(Option<Value>),
    Auth(Auth),
    ContentType(Option<String>),
    /// A field holding a string of this many bytes.
    TooLarge(&'static str, usize),
    /// A field holding arrays nested this deep.
    TooDeep(&'static str, usize),
    /// A field whose JSON text is these bytes.
    Raw(&'static str, Vec<u8>),
    Truncate(prop::sample::Index),
    IdempotencyKey(String),
}

/// Field values whose JSON text the parser refuses: invalid UTF-8 inside a string, a lone surrogate, an
/// escape that is not one, and numbers out of every range.
fn raw_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(0x80u8..=0xff, 1..4)
            .prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err())
            .prop_map(|b| [&b"\"ab"[..], &b, &b"cd\""[..]].concat()),
        Just(b"\"\\ud800\"".to_vec()),
        Just(b"\"\\udc00x\"".to_vec()),
        Just(b"\"\\q\"".to_vec()),
        Just(b"1e400".to_vec()),
        Just(b"-1e400".to_vec()),
        Just(b"123456789012345678901234567890e999".to_vec()),
    ]
    .boxed()
}

/// The breakages every body can have, with `first` the field they use.
fn request_breaks(first: &'static str) -> Vec<(u32, BoxedStrategy<Break>)> {
    vec![
        (1, prop_oneof![Just(Auth::Missing), "[A-Za-z0-9._~+/-]{1,48}".prop_map(Auth::Wrong)].prop_map(Break::Auth).boxed()),
        (
            1,
            select(&[None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("text/json"), Some("json"), Some("multipart/form-data; boundary=x"), Some("application/jsonx")][..])
                .prop_map(|ct| Break::ContentType(ct.map(str::to_owned)))
                .boxed(),
        ),
        (1, (MAX_BODY + 1..MAX_BODY + 20_000).prop_map(move |n| Break::TooLarge(first, n)).boxed()),
        (1, (130usize..3000).prop_map(move |n| Break::TooDeep(first, n)).boxed()),
        (1, raw_value().prop_map(move |b| Break::Raw(first, b)).boxed()),
        (1, any::<prop::sample::Index>().prop_map(Break::Truncate).boxed()),
    ]
}

/// Extra fields (names outside `KEYS`), now and then a large one or a deeply nested one that still fits.
fn extras() -> BoxedStrategy<Vec<(String, Value)>> {
    let key = any_string_but(&KEYS);
    let small = prop::collection::vec((key.clone(), arb_json_with_keys(&KEYS)), 0..3);
    let big = prop_oneof![
        6 => Just(None),
        1 => (key.clone(), 1000usize..40_000).prop_map(|(k, n)| Some((k, Value::String("x".repeat(n))))),
        1 => (key, 1usize..100).prop_map(|(k, depth)| Some((k, nested(depth)))),
    ];
    (small, big).prop_map(|(mut small, big)| {
        small.extend(big);
        small
    })
    .boxed()
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
}

/// A body with `fields` (and `action`, for the API), valid or with one thing broken, and the code it calls for.
fn body_case(endpoint: Endpoint, action: Option<&'static str>, fields: Vec<Field>) -> BoxedStrategy<Case> {
    let parts: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = fields
        .iter()
        .map(|f| {
            let name = f.name;
            if f.required {
                f.valid.clone().prop_map(move |v| Some((name, v))).boxed()
            } else {
                prop::option::of(f.valid.clone()).prop_map(move |v| v.map(|v| (name, v))).boxed()
            }
        })
        .collect();
    let first = fields[0].name;
    let mut breaks: Vec<(u32, BoxedStrategy<Break>)> = vec![(8, Just(Break::Nothing).boxed())];
    for f in &fields {
        let name = f.name;
        if f.required {
            breaks.push((1, Just(Break::Remove(name)).boxed()));
        }
        for (s, code) in &f.broken {
            let code = *code;
            breaks.push((2, s.clone().prop_map(move |v| Break::Set(name, v, code)).boxed()));
        }
    }
    if action.is_some() {
        let unknown = prop_oneof![
            any_string_but(&ACTIONS).prop_map(Value::String),
            "[a-z]{4,8}".prop_map(|m| Value::String(format!("Pat Client-{m}'s chart"))),
            not_string(),
        ];
        breaks.push((2, prop::option::of(unknown).prop_map(Break::Action).boxed()));
    } else {
        breaks.push((2, (any_string_but(&KEYS), arb_json_with_keys(&KEYS)).prop_map(|(k, v)| Break::Extra(k, v)).boxed()));
    }
    if endpoint == Endpoint::CreateAppointment {
        let bad_key = prop_oneof![Just(String::new()), "[a-z]{256,300}", "[a-z]{1,5} [a-z]{1,5}"];
        breaks.push((1, bad_key.prop_map(Break::IdempotencyKey).boxed()));
    }
    breaks.extend(request_breaks(first));
    let good_content_type = select(&["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", "application/ehr+json"][..]);
    // A fresh key every time, also while shrinking: a key used before replays its first appointment.
    let good_key = prop::option::of(Just(()).prop_map(|_| uuid::Uuid::new_v4().to_string()));
    let extras = if endpoint == Endpoint::Api { extras() } else { Just(Vec::new()).boxed() };
    (parts, Union::new_weighted(breaks), extras, good_content_type, good_key)
        .prop_map(move |(parts, brk, extras, content_type, key)| {
            let mut o = Map::new();
            if let Some(a) = action {
                o.insert("action".into(), Value::from(a));
            }
            for (k, v) in extras {
                o.insert(k, v);
            }
            for (k, v) in parts.into_iter().flatten() {
                o.insert(k.into(), v);
            }
            let mut case = Case {
                what: "valid",
                auth: Auth::Key,
                content_type: Some(content_type.to_owned()),
                idempotency_key: if endpoint == Endpoint::CreateAppointment { key } else { None },
                path_id: None,
                body: Body::Json(Value::Null),
                raw: Vec::new(),
                expect: Expect::Success,
            };
            let bad = |case: &mut Case, what, code| {
                case.what = what;
                case.expect = Expect::Error(code);
            };
            match brk {
                Break::Nothing => {}
                Break::Set(k, v, code) => {
                    o.insert(k.into(), v);
                    bad(&mut case, "a field of the wrong type or out of limits", code);
                }
                Break::Remove(k) => {
                    o.remove(k);
                    bad(&mut case, "a required field missing", "BadRequest");
                }
                Break::Extra(k, v) => {
                    o.insert(k, v);
                    bad(&mut case, "an unknown field", "BadRequest");
                }
                Break::Action(a) => {
                    match a {
                        Some(a) => o.insert("action".into(), a),
                        None => o.remove("action"),
                    };
                    bad(&mut case, "an unknown, wrongly typed or missing action", "BadRequest");
                }
                Break::Auth(a) => {
                    case.auth = a;
                    bad(&mut case, "no or a wrong API key", "Unauthorized");
                }
                Break::ContentType(ct) => {
                    case.content_type = ct;
                    bad(&mut case, "not JSON by its Content-Type", "UnsupportedMediaType");
                }
                Break::TooLarge(k, n) => {
                    o.insert(k.into(), Value::String("y".repeat(n)));
                    bad(&mut case, "over MAX_BODY_BYTES", "PayloadTooLarge");
                }
                Break::TooDeep(k, n) => {
                    // As text: a `Value` this deep would overflow the test's own stack (serialising, dropping).
                    o.insert(k.into(), Value::from(RAW));
                    case.raw = ["[".repeat(n), "]".repeat(n)].concat().into_bytes();
                    bad(&mut case, "nested past the parser's limit", "BadRequest");
                }
                Break::Raw(k, bytes) => {
                    o.insert(k.into(), Value::from(RAW));
                    case.raw = bytes;
                    bad(&mut case, "invalid UTF-8, a bad escape or a number out of range", "BadRequest");
                }
                Break::Truncate(at) => {
                    case.body = Body::Truncated(Value::Object(o.clone()), at);
                    bad(&mut case, "cut short", "BadRequest");
                }
                Break::IdempotencyKey(k) => {
                    case.idempotency_key = Some(k);
                    bad(&mut case, "a bad Idempotency-Key", "BadRequest");
                }
            }
            if !matches!(case.body, Body::Truncated(..)) {
                case.body = Body::Json(Value::Object(o));
            }
            case
        })
        .boxed()
}

// ---------- the three endpoints ----------

fn api_request() -> BoxedStrategy<Case> {
    let meeting_id = |required| {
        field(
            "meetingId",
            required,
            Just(Value::from(MEETING)).boxed(),
            vec![(not_string_or_null(), "BadRequest"), (not_a_guid(), "BadRequest"), (unknown_guid(), "NotFound")],
        )
    };
    let appointment_ref = prop_oneof![
        any::<i64>().prop_map(Value::from),
        "\\PC{1,64}".prop_map(Value::String),
    ];
    let appointment_ref_wrong = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::collection::vec(arb_leaf(), 0..3).prop_map(Value::Array),
        arb_string().prop_map(|s| json!({ "id": s })),
    ];
    let appointment_ref_out_of_limits = prop_oneof![
        Just(String::new()),
        "\\PC{65,80}",
        ("[a-z]{1,10}", "[\u{0}-\u{1f}]").prop_map(|(a, c)| format!("{a}{c}")),
    ]
    .prop_map(Value::String);
    let create_meeting = body_case(
        Endpoint::Api,
        Some("create-meeting"),
        vec![
            field(
                "externalMeetingId",
                false,
                chime_string(),
                vec![(not_string_or_null(), "BadRequest"), (chime_string_out_of_limits(), "UnprocessableEntity")],
            ),
            field(
                "appointmentId",
                false,
                appointment_ref.boxed(),
                vec![(appointment_ref_wrong.boxed(), "BadRequest"), (appointment_ref_out_of_limits.boxed(), "UnprocessableEntity")],
            ),
            field(
                "endsAt",
                false,
                rfc3339_in(3600..60 * 86400),
                vec![
                    (not_string_or_null(), "BadRequest"),
                    (not_a_time(), "BadRequest"),
                    (rfc3339_in(-100 * 86400..-60), "UnprocessableEntity"),
                ],
            ),
        ],
    );
    let create_attendee = body_case(
        Endpoint::Api,
        Some("create-attendee"),
        vec![
            meeting_id(true),
            field(
                "attendeeName",
                true,
                chime_string(),
                vec![(not_string(), "BadRequest"), (chime_string_out_of_limits(), "UnprocessableEntity")],
            ),
            // With an API key, the key decides and the invite is not looked at.
            field("invite", false, arb_string().prop_map(Value::String).boxed(), vec![(not_string_or_null(), "BadRequest")]),
        ],
    );
    let by_id = |action| body_case(Endpoint::Api, Some(action), vec![meeting_id(true)]);
    let get_usage = body_case(
        Endpoint::Api,
        Some("get-usage"),
        vec![
            field(
                "meetingId",
                false,
                Just(Value::from(MEETING)).boxed(),
                vec![(not_string_or_null(), "BadRequest"), (not_a_guid(), "BadRequest")],
            ),
            field(
                "to",
                false,
                (-1000i64..1000).prop_map(|d| Value::String((Utc::now() + Duration::days(d)).format("%Y-%m-%d").to_string())).boxed(),
                vec![(not_string_or_null(), "BadRequest"), (not_a_date(), "BadRequest")],
            ),
        ],
    );
    prop_oneof![
        3 => create_meeting,
        3 => create_attendee,
        1 => by_id("delete-meeting"),
        1 => by_id("get-meeting"),
        1 => by_id("list-attendees"),
        1 => get_usage,
        1 => presence(),
    ]
    .boxed()
}

/// `attendee-presence` carries a presence token of a Chime attendee, which no generated one is: a body of the
/// right shape is 401, one of the wrong shape 400.
fn presence() -> BoxedStrategy<Case> {
    let event = prop_oneof![
        3 => select(&["joined", "heartbeat", "left"][..]).prop_map(|e| (Value::from(e), true)),
        1 => any_string_but(&["joined", "heartbeat", "left"]).prop_map(|e| (Value::from(e), false)),
        1 => not_string().prop_map(|e| (e, false)),
    ];
    let token = prop_oneof![3 => arb_string().prop_map(|t| (Value::from(t), true)), 1 => not_string().prop_map(|t| (t, false))];
    (token, event).prop_map(|((token, token_ok), (event, event_ok))| Case {
        what: "a presence report with a made-up token",
        auth: Auth::Key,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        path_id: None,
        body: Body::Json(json!({"action": "attendee-presence", "token": token, "event": event})),
        raw: Vec::new(),
        expect: Expect::Error(if token_ok && event_ok { "Unauthorized" } else { "BadRequest" }),
    })
    .boxed()
}

fn appointment_fields(required: bool) -> Vec<Field> {
    let name = |n| {
        field(n, required, person_name(), vec![(not_string_or_null(), "BadRequest"), (person_name_out_of_limits(), "BadRequest")])
    };
    let nullable = |n, valid: BoxedStrategy<Value>, invalid: BoxedStrategy<Value>| {
        field(n, false, prop_oneof![4 => valid, 1 => Just(Value::Null)].boxed(), vec![(not_string_or_null(), "BadRequest"), (invalid, "BadRequest")])
    };
    let no_at = arb_string().prop_filter("no @", |s| !s.contains('@')).prop_map(Value::String).boxed();
    let not_e164 = prop_oneof!["[0-9]{3,10}", "\\+0[0-9]{8}", "\\+[1-9][0-9]{15,20}", "[a-z]{3,10}"].prop_map(Value::String).boxed();
    // In a patch, `null` is "unchanged", like an absent field (only the two contacts are cleared by it).
    let null = if required { Just(Value::Null).boxed() } else { arb_string().prop_map(Value::String).boxed() };
    let not_a_number = prop_oneof![
        arb_string().prop_map(Value::String),
        null,
        any::<bool>().prop_map(Value::Bool),
        (5.5f64..480.0).prop_map(Value::from),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        prop::collection::vec(arb_leaf(), 0..2).prop_map(Value::Array),
    ];
    let out_of_range = prop_oneof![any::<i64>(), -10i64..5, 481i64..1000].prop_filter("outside 5–480", |n| !(5..=480).contains(n)).prop_map(Value::from);
    let modality = select(&["in-person", "telehealth"][..]).prop_map(Value::from);
    vec![
        name("client_name"),
        nullable("client_email", email(), no_at),
        nullable("client_phone", phone(), not_e164),
        name("practitioner"),
        field(
            "start_time",
            required,
            rfc3339_in(2 * 3600..60 * 86400),
            vec![(not_string_or_null(), "BadRequest"), (not_a_time(), "BadRequest"), (rfc3339_in(-100 * 86400..-60), "BadRequest")],
        ),
        field("duration_minutes", required, (5i64..=480).prop_map(Value::from).boxed(), vec![(not_a_number.boxed(), "BadRequest"), (out_of_range.boxed(), "BadRequest")]),
        field(
            "modality",
            required,
            modality.boxed(),
            vec![(not_string_or_null(), "BadRequest"), (any_string_but(&["in-person", "telehealth"]).prop_map(Value::String).boxed(), "BadRequest")],
        ),
    ]
}

fn create_appointment() -> BoxedStrategy<Case> {
    body_case(Endpoint::CreateAppointment, None, appointment_fields(true))
}

/// A patch of the real appointment, or a patch of one that is not there: an id that is not a GUID (any
/// text, percent-encoded; bytes that are not UTF-8 once decoded) is 404 whatever the body, as the id is looked
/// at first; an unknown GUID is 404 once the body has passed (its own refusal comes first).
fn patch_appointment() -> BoxedStrategy<Case> {
    let encode = |s: String| percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let not_a_guid = prop_oneof![
        // Not empty, `.` or `..`: the client's URL parser takes those for path segments of its own.
        arb_string().prop_filter("not a GUID", |s| !is_guid(s) && !["", ".", ".."].contains(&s.as_str())).prop_map(encode),
        prop::collection::vec(0x80u8..=0xff, 1..6).prop_map(|b| b.iter().map(|b| format!("%{b:02X}")).collect::<String>()),
        Just("%zz".to_owned()),
    ];
    let unknown = any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string());
    let patch = || body_case(Endpoint::PatchAppointment, None, appointment_fields(false));
    prop_oneof![
        6 => patch(),
        1 => (patch(), not_a_guid).prop_map(|(mut case, id)| {
            // No key is refused first, and so is a body over the limit (413 before the body is read or routed).
            if !matches!(case.expect, Expect::Error("Unauthorized" | "PayloadTooLarge")) {
                case.what = "an appointment id that is not a GUID";
                case.expect = Expect::Error("NotFound");
            }
            case.path_id = Some(id);
            case
        }),
        1 => (patch(), unknown).prop_map(|(mut case, id)| {
            case.expect = match case.expect {
                Expect::Success => Expect::Error("NotFound"),
                // A body of the wrong shape is refused before the lookup, a value out of limits after it.
                Expect::Error("BadRequest") => Expect::OneOf("BadRequest", "NotFound"),
                other => other,
            };
            if case.expect == Expect::Error("NotFound") {
                case.what = "an appointment that does not exist";
            }
            case.path_id = Some(id);
            case
        }),
    ]
    .boxed()
}

/// Bodies that are no request at all. `json_may_be_valid`: any JSON object may be a valid body (a patch).
fn garbage(endpoint: Endpoint) -> BoxedStrategy<Case> {
    let positional: Vec<Value> = match endpoint {
        Endpoint::Api => vec![
            json!(["get-meeting", MEETING]),
            json!(["list-attendees", MEETING]),
            json!(["create-meeting", null, null, null]),
            json!(["create-attendee", MEETING, "Pat Client", null]),
        ],
        Endpoint::CreateAppointment => vec![json!([
            "Jordan Example", null, null, "Dr. Rivera", (Utc::now() + Duration::days(3)).to_rfc3339(), 45, "in-person"
        ])],
        Endpoint::PatchAppointment => vec![json!(["Jordan Example"]), json!([])],
    };
    let any_json = if endpoint == Endpoint::PatchAppointment { Expect::Either } else { Expect::Error("BadRequest") };
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512).prop_map(|b| (Body::Bytes(b), "bytes", Expect::Error("BadRequest"))),
        2 => jsonish_text().prop_map(|t| (Body::Bytes(t.into_bytes()), "almost JSON", Expect::Error("BadRequest"))),
        2 => arb_json_with_keys(&KEYS).prop_map(move |v| {
            let expect = if v.is_object() { any_json } else { Expect::Error("BadRequest") };
            (Body::Json(v), "any JSON", expect)
        }),
        1 => select(positional).prop_map(|v| (Body::Json(v), "the positional (array) form", Expect::Error("BadRequest"))),
    ]
    .prop_map(|(body, what, expect)| Case {
        what,
        auth: Auth::Key,
        content_type: Some("application/json".into()),
        idempotency_key: None,
        path_id: None,
        body,
        raw: Vec::new(),
        expect,
    })
    .boxed()
}

// ---------- running a case ----------

struct Sent {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
    /// The request's body as sent, and the path's id, for the echo check.
    input: String,
}

fn substitute(v: &Value, meeting: &str) -> Value {
    match v {
        Value::String(s) if s == MEETING => Value::String(meeting.to_owned()),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, meeting)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute(v, meeting))).collect()),
        other => other.clone(),
    }
}

fn mentions_meeting(v: &Value) -> bool {
    match v {
        Value::String(s) => s == MEETING,
        Value::Array(a) => a.iter().any(mentions_meeting),
        Value::Object(o) => o.values().any(mentions_meeting),
        _ => false,
    }
}

async fn send(h: &Harness, endpoint: Endpoint, appointment: &str, case: &Case) -> Result<(Sent, Option<String>), TestCaseError> {
    let s = &h.server;
    let meeting = match &case.body {
        Body::Json(v) | Body::Truncated(v, _) if mentions_meeting(v) => Some(common::meeting_id(&s.create_meeting().await)),
        _ => None,
    };
    let bytes = match &case.body {
        Body::Json(v) => {
            let text = substitute(v, meeting.as_deref().unwrap_or("")).to_string();
            let raw = format!("\"{RAW}\"");
            match text.find(&raw) {
                Some(i) => [&text.as_bytes()[..i], &case.raw, &text.as_bytes()[i + raw.len()..]].concat(),
                None => text.into_bytes(),
            }
        }
        Body::Truncated(v, at) => {
            let text = substitute(v, meeting.as_deref().unwrap_or("")).to_string();
            text.as_bytes()[..at.index(text.len())].to_vec()
        }
        Body::Bytes(b) => b.clone(),
    };
    let (method, path) = match endpoint {
        Endpoint::Api => (reqwest::Method::POST, common::API.to_owned()),
        Endpoint::CreateAppointment => (reqwest::Method::POST, "/api/appointments".to_owned()),
        Endpoint::PatchAppointment => {
            (reqwest::Method::PATCH, format!("/api/appointments/{}", case.path_id.as_deref().unwrap_or(appointment)))
        }
    };
    let mut req = props::fresh_client().request(method, s.url(&path)).body(bytes.clone());
    match &case.auth {
        Auth::Key => req = req.bearer_auth(&s.key),
        Auth::Missing => {}
        Auth::Wrong(k) => req = req.bearer_auth(k),
    }
    if let Some(ct) = &case.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if let Some(k) = &case.idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let res = req.send().await.map_err(|e| TestCaseError::fail(format!("the request did not get an answer: {e}")))?;
    let status = res.status();
    let content_type = res.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = res.bytes().await.map_err(|e| TestCaseError::fail(format!("the answer broke off: {e}")))?.to_vec();
    let mut input = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(id) = &case.path_id {
        input.push(' ');
        input.push_str(&percent_encoding::percent_decode_str(id).decode_utf8_lossy());
    }
    Ok((Sent { status, content_type, body, input }, meeting))
}

/// The contract's error shape, a 4xx whose status matches its code, a message that is not empty and does not
/// repeat the input; returns the code.
fn check_error(sent: &Sent) -> Result<String, TestCaseError> {
    let text = String::from_utf8_lossy(&sent.body);
    prop_assert!(sent.status.is_client_error(), "a 4xx, got {}: {}", sent.status, text);
    prop_assert!(sent.content_type.starts_with("application/json"), "JSON, got {:?}: {}", sent.content_type, text);
    let v: Value = serde_json::from_slice(&sent.body).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
    let mut keys: Vec<&String> = v.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    keys.sort();
    prop_assert_eq!(keys, vec!["error", "success"], "{}", v);
    prop_assert_eq!(&v["success"], &json!(false), "{}", v);
    let mut error_keys: Vec<&String> = v["error"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
    error_keys.sort();
    prop_assert_eq!(error_keys, vec!["code", "message"], "{}", v);
    let code = v["error"]["code"].as_str().unwrap_or_default();
    let status = CODES.iter().find(|(c, _)| *c == code).map(|(_, s)| *s);
    prop_assert_eq!(status, Some(sent.status.as_u16()), "a contract code with its status: {}", v);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    prop_assert!(!message.trim().is_empty(), "{}", v);
    no_echo(message, &sent.input, 5)?;
    prop_assert!(!message.contains("Pat Client-"), "{}", v);
    Ok(code.to_owned())
}

/// What a success of this endpoint must look like, given the body that was sent.
fn check_success(endpoint: Endpoint, sent: &Sent, body: &Value, meeting: Option<&str>, appointment: &str) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(&sent.body);
    let expected_status = if endpoint == Endpoint::CreateAppointment { [StatusCode::CREATED, StatusCode::OK] } else { [StatusCode::OK; 2] };
    prop_assert!(expected_status.contains(&sent.status), "success, got {}: {}", sent.status, text);
    let v: Value = serde_json::from_slice(&sent.body).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
    prop_assert_eq!(&v["success"], &json!(true), "{}", v);
    match endpoint {
        Endpoint::Api => {
            prop_assert_eq!(&v["demoMode"], &json!(true), "{}", v);
            match body["action"].as_str().unwrap() {
                "create-meeting" => {
                    prop_assert!(v["meeting"]["MeetingId"].as_str().is_some_and(is_guid), "{}", v);
                    if body.get("appointmentId").is_none_or(Value::is_null) && body.get("externalMeetingId").is_some_and(Value::is_string) {
                        prop_assert_eq!(&v["meeting"]["ExternalMeetingId"], &body["externalMeetingId"]);
                    }
                }
                "create-attendee" => {
                    prop_assert_eq!(&v["attendee"]["ExternalUserId"], &body["attendeeName"]);
                    prop_assert!(v["attendee"]["AttendeeId"].as_str().is_some_and(is_guid), "{}", v);
                    prop_assert_eq!(v["meeting"]["MeetingId"].as_str(), meeting);
                }
                "get-meeting" => prop_assert_eq!(v["meeting"]["MeetingId"].as_str(), meeting),
                "list-attendees" => prop_assert!(v["attendees"].is_array(), "{}", v),
                "delete-meeting" => {}
                "get-usage" => prop_assert!(v.get("usage").is_some(), "{}", v),
                other => prop_assert!(false, "{other} succeeded"),
            }
        }
        Endpoint::CreateAppointment | Endpoint::PatchAppointment => {
            let a = &v["appointment"];
            if endpoint == Endpoint::PatchAppointment {
                prop_assert_eq!(a["id"].as_str(), Some(appointment));
            }
            prop_assert_eq!(&a["status"], &json!("scheduled"));
            for k in ["client_name", "practitioner"] {
                if let Some(s) = body.get(k).and_then(Value::as_str) {
                    prop_assert_eq!(a[k].as_str(), Some(s.trim()), "{}", k);
                }
            }
            // `null` clears a contact and leaves anything else as it was.
            for k in ["client_phone", "duration_minutes", "modality"] {
                if let Some(x) = body.get(k).filter(|x| k == "client_phone" || !x.is_null()) {
                    prop_assert_eq!(&a[k], x, "{}", k);
                }
            }
            if let Some(e) = body.get("client_email") {
                prop_assert_eq!(a["client_email"].as_str(), e.as_str().map(str::trim));
            }
            let telehealth = a["modality"] == "telehealth";
            prop_assert_eq!(a["telehealth_room_id"].as_str().is_some_and(is_guid), telehealth, "{}", a);
        }
    }
    Ok(())
}

fn run(endpoint: Endpoint, cases: u32, strategy: BoxedStrategy<Case>) {
    let h = Harness::start();
    // The appointment the patches change: in person, three days ahead.
    let appointment = if endpoint == Endpoint::PatchAppointment {
        h.block_on(async {
            let body = json!({
                "client_name": "Jordan Example", "practitioner": "Dr. Rivera", "duration_minutes": 45, "modality": "in-person",
                "start_time": (Utc::now() + Duration::days(3)).to_rfc3339(),
            });
            let res = props::fresh_client().post(h.server.url("/api/appointments")).bearer_auth(&h.server.key).json(&body).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            res.json::<Value>().await.unwrap()["appointment"]["id"].as_str().unwrap().to_owned()
        })
    } else {
        String::new()
    };
    h.check(cases, strategy, |h, case| {
        h.block_on(async {
            let (sent, meeting) = send(h, endpoint, &appointment, &case).await?;
            let body = match &case.body {
                Body::Json(v) => substitute(v, meeting.as_deref().unwrap_or("")),
                _ => Value::Null,
            };
            let succeeded = sent.status.is_success();
            match case.expect {
                Expect::Success => check_success(endpoint, &sent, &body, meeting.as_deref(), &appointment)?,
                Expect::Error(code) => {
                    let got = check_error(&sent)?;
                    prop_assert_eq!(got.as_str(), code, "{}: {}", case.what, String::from_utf8_lossy(&sent.body));
                }
                Expect::OneOf(a, b) => {
                    let got = check_error(&sent)?;
                    prop_assert!(got == a || got == b, "{}: {}", case.what, String::from_utf8_lossy(&sent.body));
                }
                Expect::Either if succeeded => check_success(endpoint, &sent, &body, meeting.as_deref(), &appointment)?,
                Expect::Either => {
                    check_error(&sent)?;
                }
            }
            h.healthy().await
        })
    });
}

#[test]
fn aws_chime_video_answers_any_request_with_success_or_the_contracts_error() {
    run(Endpoint::Api, 256, api_request());
}

#[test]
fn aws_chime_video_refuses_any_non_request_with_the_contracts_error() {
    run(Endpoint::Api, 128, garbage(Endpoint::Api));
}

#[test]
fn creating_an_appointment_answers_any_request_with_success_or_the_contracts_error() {
    run(Endpoint::CreateAppointment, 256, create_appointment());
}

#[test]
fn creating_an_appointment_refuses_any_non_request_with_the_contracts_error() {
    run(Endpoint::CreateAppointment, 128, garbage(Endpoint::CreateAppointment));
}

#[test]
fn patching_an_appointment_answers_any_request_with_success_or_the_contracts_error() {
    run(Endpoint::PatchAppointment, 256, patch_appointment());
}

#[test]
fn patching_an_appointment_answers_any_body_with_success_or_the_contracts_error() {
    run(Endpoint::PatchAppointment, 128, garbage(Endpoint::PatchAppointment));
}
