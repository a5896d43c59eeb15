//! The `Store` contract, run against both implementations: a temp SQLite file and the real PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`), each PostgreSQL test in a fresh
//! schema. An unreachable PostgreSQL skips those tests locally, but FAILS them when `CI=true`.

#[path = "support/postgres.rs"]
mod postgres;

use chrono::{SubsecRound, Utc};
use postgres::fresh_schema;
use std::future::Future;
use telehealth_gateway::ids::{AppointmentId, AttendeeId, ExternalMeetingId, ExternalUserId, MeetingId, OutboxId, Provider, Role, SessionId};
use telehealth_gateway::store::appointments::{AppointmentRecord, AppointmentStatus, Modality};
use telehealth_gateway::store::outbox::{Channel, OutboxMessage, OutboxState};
use telehealth_gateway::store;
use telehealth_gateway::store::{
    AttendeeRecord, AuditAction, AuditActor, AuditEntry, InsertAttendee, InsertMeeting, MeetingRecord, SessionRecord, Store, StoreError,
};


/// Runs `test` on a fresh SQLite file, then on a fresh PostgreSQL schema.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/test.db", dir.path().display());
    let sqlite = Store::connect(&url).await.expect("SQLite opens, creating its directory");
    test(sqlite).await;

    let Some(schema) = fresh_schema("store_test").await else { return };
    let opts = schema.options();
    let pg = Store::connect_postgres(opts).await.expect("PostgreSQL migrations run in a fresh schema");
    test(pg).await;
    schema.drop().await;
}

fn meeting() -> MeetingRecord {
    MeetingRecord {
        id: MeetingId::new(),
        external_meeting_id: ExternalMeetingId::parse("appointment-1").unwrap(),
        // One live meeting per appointment: each fixture has its own.
        appointment_id: Some(uuid::Uuid::new_v4().to_string()),
        provider: Provider::Local,
        media_region: "us-east-1".into(),
        created_at: Utc::now(),
        deleted_at: None,
        ends_at: None,
        provider_meeting: None,
    }
}

fn attendee(meeting: MeetingId, name: &str) -> AttendeeRecord {
    AttendeeRecord {
        meeting_id: meeting,
        attendee_id: AttendeeId::new(),
        external_user_id: ExternalUserId::parse(name).unwrap(),
        role: Role::Host,
        created_at: Utc::now(),
    }
}

/// The `meeting.created` line stored with a meeting, as the local provider writes it.
fn created_line(m: &MeetingRecord, by: &AuditActor) -> AuditEntry {
    AuditEntry {
        action: AuditAction::MeetingCreated,
        meeting_id: Some(m.id),
        actor: by.clone(),
        detail: Some(format!("provider={}", m.provider)),
        ..Default::default()
    }
}

/// The `attendee.created` line stored with an attendee.
fn joined_line(a: &AttendeeRecord) -> AuditEntry {
    AuditEntry {
        action: AuditAction::AttendeeCreated,
        meeting_id: Some(a.meeting_id),
        attendee_id: Some(a.attendee_id),
        actor: AuditActor::Invite,
        detail: Some("provider=local".into()),
        ..Default::default()
    }
}

/// The `meeting.deleted` line stored with a deletion.
fn deleted_line(m: MeetingId) -> AuditEntry {
    AuditEntry { action: AuditAction::MeetingDeleted, meeting_id: Some(m), actor: AuditActor::System, ..Default::default() }
}

#[tokio::test]
async fn a_meeting_round_trips_and_disappears_once_deleted() {
    on_both(|store| async move {
        let m = meeting();
        store.insert_meeting(&m, &created_line(&m, &AuditActor::System)).await.unwrap();
        let got = store.find_live_meeting(m.id).await.unwrap().expect("stored");
        assert_eq!((got.id, got.external_meeting_id.as_str(), &got.appointment_id), (m.id, "appointment-1", &m.appointment_id));
        assert_eq!((got.provider, got.media_region.as_str()), (Provider::Local, "us-east-1"));
        assert!(store.mark_meeting_deleted(m.id, &deleted_line(m.id)).await.unwrap());
        assert!(store.find_live_meeting(m.id).await.unwrap().is_none());
        assert!(!store.mark_meeting_deleted(m.id, &deleted_line(m.id)).await.unwrap(), "deleting twice reports not-live");
        assert!(store.find_live_meeting(MeetingId::new()).await.unwrap().is_none());
        // The deletion wrote its line; the refused second one wrote none.
        assert_eq!(actions(&store, m.id).await, ["meeting.created", "meeting.deleted"]);
    })
    .await;
}

#[tokio::test]
async fn attendees_are_listed_in_order_and_found_only_while_their_meeting_lives() {
    on_both(|store| async move {
        let m = meeting();
        store.insert_meeting(&m, &created_line(&m, &AuditActor::System)).await.unwrap();
        let a = attendee(m.id, "Dr. Smith");
        let b = AttendeeRecord { role: Role::Guest, ..attendee(m.id, "Pat Patient") };
        assert_eq!(store.insert_attendee(&a, 250, &joined_line(&a)).await.unwrap(), InsertAttendee::Inserted);
        assert_eq!(store.insert_attendee(&b, 250, &joined_line(&b)).await.unwrap(), InsertAttendee::Inserted);
        let list = store.list_attendees(m.id).await.unwrap();
        let ids: Vec<_> = list.iter().map(|r| r.attendee_id).collect();
        assert_eq!(ids, [a.attendee_id, b.attendee_id]);
        assert_eq!(list[1].external_user_id.as_str(), "Pat Patient");
        let roles: Vec<_> = list.iter().map(|r| r.role).collect();
        assert_eq!(roles, [Role::Host, Role::Guest], "each attendee keeps the role it was created with");
        let found = store.find_live_attendee(m.id, a.attendee_id).await.unwrap().expect("found");
        assert_eq!((found.external_user_id.as_str(), found.role), ("Dr. Smith", Role::Host));
        let found = store.find_live_attendee(m.id, b.attendee_id).await.unwrap().expect("found");
        assert_eq!(found.role, Role::Guest);
        assert!(store.find_live_attendee(MeetingId::new(), a.attendee_id).await.unwrap().is_none());

        store.mark_meeting_deleted(m.id, &deleted_line(m.id)).await.unwrap();
        assert!(store.find_live_attendee(m.id, a.attendee_id).await.unwrap().is_none());
        assert!(store.list_attendees(m.id).await.unwrap().is_empty());
        let late = attendee(m.id, "Late Comer");
        assert_eq!(store.insert_attendee(&late, 250, &joined_line(&late)).await.unwrap(), InsertAttendee::MeetingNotFound);
        let nowhere = attendee(MeetingId::new(), "Lost Soul");
        assert_eq!(store.insert_attendee(&nowhere, 250, &joined_line(&nowhere)).await.unwrap(), InsertAttendee::MeetingNotFound);
        // A line per stored attendee, none for the refused ones.
        let log = store.audit_for_meeting(m.id).await.unwrap();
        let lines: Vec<_> = log.iter().map(|r| (r.action.as_str(), r.attendee_id, r.actor.as_str())).collect();
        assert_eq!(
            lines,
            [
                ("meeting.created", None, "system"),
                ("attendee.created", Some(a.attendee_id), "invite"),
                ("attendee.created", Some(b.attendee_id), "invite"),
                ("meeting.deleted", None, "system"),
            ]
        );
        assert!(store.audit_for_meeting(nowhere.meeting_id).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn concurrent_attendee_inserts_never_exceed_the_limit() {
    on_both(|store| async move {
        let m = meeting();
        store.insert_meeting(&m, &created_line(&m, &AuditActor::System)).await.unwrap();
        let tries: Vec<_> = (0..12).map(|i| attendee(m.id, &format!("Attendee {i}"))).collect();
        let results = futures::future::join_all(tries.iter().map(|a| {
            let store = &store;
            async move { store.insert_attendee(a, 5, &joined_line(a)).await }
        })).await;
        let inserted = results.iter().filter(|r| *r.as_ref().unwrap() == InsertAttendee::Inserted).count();
        let refused = results.iter().filter(|r| *r.as_ref().unwrap() == InsertAttendee::LimitReached).count();
        assert_eq!((inserted, refused), (5, 7));
        assert_eq!(store.list_attendees(m.id).await.unwrap().len(), 5);
        let created = actions(&store, m.id).await.iter().filter(|a| *a == "attendee.created").count();
        assert_eq!(created, 5, "a line for each seat taken, none for the refused");
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_keeps_entries_in_order_with_their_actor() {
    on_both(|store| async move {
        let m = MeetingId::new();
        let a = AttendeeId::new();
        store
            .append_audit(AuditEntry {
                action: AuditAction::MeetingCreated,
                meeting_id: Some(m),
                actor: AuditActor::ApiKey { fingerprint: "0123456789ab".into() },
                detail: Some("provider=local".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        // The shape the WebSocket handler uses.
        store
            .append_audit(AuditEntry { action: AuditAction::AttendeeJoined, meeting_id: Some(m), attendee_id: Some(a), ..Default::default() })
            .await
            .unwrap();
        let log = store.audit_for_meeting(m).await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].action.as_str(), log[0].actor.as_str()), ("meeting.created", "api-key:0123456789ab"));
        assert_eq!(log[0].detail.as_deref(), Some("provider=local"));
        assert_eq!((log[1].action.as_str(), log[1].actor.as_str(), log[1].attendee_id), ("attendee.joined", "attendee", Some(a)));
        assert!(log[0].id < log[1].id && log[0].at <= log[1].at);
        assert!(store.audit_for_meeting(MeetingId::new()).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    store.append_audit(AuditEntry { meeting_id: Some(MeetingId::new()), ..Default::default() }).await.unwrap();
    assert!(sqlx::query("UPDATE audit_log SET actor = 'x'").execute(store.sqlite_pool().unwrap()).await.is_err());
    assert!(sqlx::query("DELETE FROM audit_log").execute(store.sqlite_pool().unwrap()).await.is_err());

    let Some(schema) = fresh_schema("store_test").await else { return };
    let opts = schema.options();
    let pg = Store::connect_postgres(opts).await.unwrap();
    pg.append_audit(AuditEntry { meeting_id: Some(MeetingId::new()), ..Default::default() }).await.unwrap();
    assert!(sqlx::query("UPDATE audit_log SET actor = 'x'").execute(pg.postgres_pool().unwrap()).await.is_err());
    assert!(sqlx::query("DELETE FROM audit_log").execute(pg.postgres_pool().unwrap()).await.is_err());
    drop(pg);
    schema.drop().await;
}

#[tokio::test]
async fn a_reopened_sqlite_file_keeps_its_meetings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let m = meeting();
    {
        let store = Store::connect(&url).await.unwrap();
        store.insert_meeting(&m, &created_line(&m, &AuditActor::System)).await.unwrap();
        let a = attendee(m.id, "Dr. Smith");
        store.insert_attendee(&a, 250, &joined_line(&a)).await.unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    assert!(store.find_live_meeting(m.id).await.unwrap().is_some());
    assert_eq!(store.list_attendees(m.id).await.unwrap().len(), 1);
}

/// The meeting's audit actions, oldest first.
async fn actions(store: &Store, m: MeetingId) -> Vec<String> {
    store.audit_for_meeting(m).await.unwrap().into_iter().map(|r| r.action).collect()
}

fn created_by(fingerprint: &str) -> AuditActor {
    AuditActor::ApiKey { fingerprint: fingerprint.into() }
}

#[tokio::test]
async fn a_meeting_is_stored_with_its_creation_audit_line() {
    on_both(|store| async move {
        let m = meeting();
        store.insert_meeting(&m, &created_line(&m, &created_by("0123456789ab"))).await.unwrap();
        let log = store.audit_for_meeting(m.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].action.as_str(), log[0].actor.as_str()), ("meeting.created", "api-key:0123456789ab"));
        assert_eq!((log[0].meeting_id, log[0].detail.as_deref()), (Some(m.id), Some("provider=local")));
    })
    .await;
}

#[tokio::test]
async fn an_appointment_has_one_live_meeting_at_a_time() {
    on_both(|store| async move {
        let first = meeting();
        let second = MeetingRecord { id: MeetingId::new(), ..first.clone() };
        let by = AuditActor::System;
        assert_eq!(store.insert_meeting(&first, &created_line(&first, &by)).await.unwrap(), InsertMeeting::Inserted);
        let refused = store.insert_meeting(&second, &created_line(&second, &by)).await.unwrap();
        assert_eq!(refused, InsertMeeting::AppointmentTaken);
        assert!(store.find_live_meeting(second.id).await.unwrap().is_none());
        assert!(store.audit_for_meeting(second.id).await.unwrap().is_empty(), "no line for the refused meeting");
        let appointment = first.appointment_id.as_deref().unwrap();
        let found = store.find_live_meeting_for_appointment(appointment).await.unwrap().expect("the first one");
        assert_eq!(found.id, first.id);

        // Once the first is deleted, the appointment can have a new one.
        store.mark_meeting_deleted(first.id, &deleted_line(first.id)).await.unwrap();
        assert!(store.find_live_meeting_for_appointment(appointment).await.unwrap().is_none());
        assert_eq!(store.insert_meeting(&second, &created_line(&second, &by)).await.unwrap(), InsertMeeting::Inserted);
        let found = store.find_live_meeting_for_appointment(appointment).await.unwrap().expect("the second one");
        assert_eq!(found.id, second.id);
    })
    .await;
}

#[tokio::test]
async fn five_hundred_concurrent_writes_all_land_and_read_back() {
    on_both(|store| async move {
        let meetings: Vec<MeetingRecord> = (0..500).map(|_| meeting()).collect();
        let joined: Vec<_> = meetings.iter().map(|m| (m.id, AttendeeId::new())).collect();
        let creates = futures::future::join_all(meetings.iter().map(|m| async { store.insert_meeting(m, &created_line(m, &AuditActor::System)).await }));
        let audits = futures::future::join_all(joined.iter().map(|&(m, a)| {
            let entry = AuditEntry { meeting_id: Some(m), attendee_id: Some(a), ..Default::default() };
            store.append_audit(AuditEntry { action: AuditAction::AttendeeJoined, ..entry })
        }));
        let (creates, audits) = futures::join!(creates, audits);
        assert!(creates.iter().all(|r| matches!(r, Ok(InsertMeeting::Inserted))), "every meeting is stored");
        assert!(audits.iter().all(Result::is_ok), "every audit line is stored");
        for (m, &(_, attendee)) in meetings.iter().zip(&joined) {
            assert!(store.find_live_meeting(m.id).await.unwrap().is_some(), "meeting {} is stored", m.id);
            let log = store.audit_for_meeting(m.id).await.unwrap();
            let mut lines: Vec<_> = log.iter().map(|r| (r.action.as_str(), r.attendee_id)).collect();
            // The two writes of one meeting raced each other; either order is fine.
            lines.sort();
            assert_eq!(lines, [("attendee.joined", Some(attendee)), ("meeting.created", None)], "meeting {}", m.id);
        }
    })
    .await;
}

#[tokio::test]
async fn a_failing_write_does_not_affect_the_others_written_with_it() {
    on_both(|store| async move {
        let gone = meeting();
        store.insert_meeting(&gone, &created_line(&gone, &AuditActor::System)).await.unwrap();
        store.mark_meeting_deleted(gone.id, &deleted_line(gone.id)).await.unwrap();
        let live = meeting();
        store.insert_meeting(&live, &created_line(&live, &AuditActor::System)).await.unwrap();

        // Issued together (on SQLite, one transaction): a duplicate MeetingId between good inserts, and an
        // attendee for a deleted meeting between good attendees.
        let fresh: Vec<MeetingRecord> = (0..20).map(|_| meeting()).collect();
        let external_meeting_id = ExternalMeetingId::parse("duplicate").unwrap();
        let duplicate = MeetingRecord { external_meeting_id, appointment_id: None, ..fresh[10].clone() };
        let meetings = fresh[..10].iter().chain([&duplicate]).chain(&fresh[10..]);
        let attendees: Vec<AttendeeRecord> =
            (0..10).map(|i| attendee(if i == 5 { gone.id } else { live.id }, &format!("Attendee {i}"))).collect();
        let by = AuditActor::System;
        let (created, inserted) = futures::join!(
            futures::future::join_all(meetings.map(|m| async { store.insert_meeting(m, &created_line(m, &by)).await })),
            futures::future::join_all(attendees.iter().map(|a| async { store.insert_attendee(a, 250, &joined_line(a)).await })),
        );

        let failed = created.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 1, "exactly one of the two inserts with the same id fails: {created:?}");
        let refused = created.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(matches!(refused, StoreError::Conflict(_)), "a duplicate id is a conflict: {refused:?}");
        for m in &fresh {
            assert!(store.find_live_meeting(m.id).await.unwrap().is_some());
        }
        let twice = store.audit_for_meeting(fresh[10].id).await.unwrap();
        assert_eq!(twice.len(), 1, "the refused insert left no audit line");
        let outcomes: Vec<_> = inserted.into_iter().map(Result::unwrap).collect();
        for (i, outcome) in outcomes.iter().enumerate() {
            let expected = if i == 5 { InsertAttendee::MeetingNotFound } else { InsertAttendee::Inserted };
            assert_eq!(*outcome, expected, "attendee {i}");
        }
        assert_eq!(store.list_attendees(live.id).await.unwrap().len(), 9);
    })
    .await;
}

/// A SQLite store whose audit log refuses lines by the actor `api-key:refused`: stands in for any failure of
/// the second statement of a change and its audit line.
async fn refusing_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_test_actor BEFORE INSERT ON audit_log WHEN NEW.actor = 'api-key:refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(store.sqlite_pool().unwrap())
    .await
    .unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_meeting_whose_audit_line_fails_is_not_stored_and_its_neighbours_are() {
    let (_dir, store) = refusing_store().await;
    let ms: Vec<MeetingRecord> = (0..5).map(|_| meeting()).collect();
    let (ok, refused) = (AuditActor::System, created_by("refused"));
    let by = |i: usize| if i == 2 { &refused } else { &ok };
    let store = &store;
    let inserts = ms.iter().enumerate().map(|(i, m)| async move { store.insert_meeting(m, &created_line(m, by(i))).await });
    let results = futures::future::join_all(inserts).await;
    for (i, (m, r)) in ms.iter().zip(&results).enumerate() {
        let stored = store.find_live_meeting(m.id).await.unwrap().is_some();
        let audited = store.audit_for_meeting(m.id).await.unwrap().len();
        if i == 2 {
            assert!(r.is_err() && !stored && audited == 0, "neither the meeting nor its line: {r:?}");
        } else {
            assert!(r.is_ok() && stored && audited == 1, "meeting {i}: {r:?}");
        }
    }
}

#[tokio::test]
async fn an_attendee_or_deletion_whose_audit_line_fails_is_undone_and_its_neighbours_are_not() {
    let (_dir, store) = refusing_store().await;
    let store = &store;
    let refused = |mut line: AuditEntry| {
        line.actor = created_by("refused");
        line
    };
    let ms: Vec<MeetingRecord> = (0..4).map(|_| meeting()).collect();
    for m in &ms {
        store.insert_meeting(m, &created_line(m, &AuditActor::System)).await.unwrap();
    }
    let attendees: Vec<AttendeeRecord> = (0..5).map(|i| attendee(ms[0].id, &format!("Attendee {i}"))).collect();
    // Issued together, so on SQLite they share transactions with the failing ones.
    let (inserted, deleted) = futures::join!(
        futures::future::join_all(attendees.iter().enumerate().map(|(i, a)| {
            let line = if i == 2 { refused(joined_line(a)) } else { joined_line(a) };
            async move { store.insert_attendee(a, 250, &line).await }
        })),
        futures::future::join_all(ms[1..].iter().enumerate().map(|(i, m)| {
            let line = if i == 1 { refused(deleted_line(m.id)) } else { deleted_line(m.id) };
            async move { store.mark_meeting_deleted(m.id, &line).await }
        })),
    );
    for (i, (a, r)) in attendees.iter().zip(&inserted).enumerate() {
        let stored = store.find_live_attendee(ms[0].id, a.attendee_id).await.unwrap().is_some();
        if i == 2 {
            assert!(r.is_err() && !stored, "neither the attendee nor its line: {r:?}");
        } else {
            assert!(matches!(r, Ok(InsertAttendee::Inserted)) && stored, "attendee {i}: {r:?}");
        }
    }
    assert_eq!(actions(store, ms[0].id).await.iter().filter(|a| *a == "attendee.created").count(), 4);
    for (i, (m, r)) in ms[1..].iter().zip(&deleted).enumerate() {
        let live = store.find_live_meeting(m.id).await.unwrap().is_some();
        let lines = actions(store, m.id).await;
        if i == 1 {
            assert!(r.is_err() && live && lines == ["meeting.created"], "still live, no line: {r:?} {lines:?}");
        } else {
            assert!(matches!(r, Ok(true)) && !live && lines == ["meeting.created", "meeting.deleted"], "meeting {i}: {r:?}");
        }
    }
    // The meeting whose deletion was undone can still be deleted.
    assert!(store.mark_meeting_deleted(ms[2].id, &deleted_line(ms[2].id)).await.unwrap());
}

fn session(meeting: MeetingId, node: Option<&str>, started_at: chrono::DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        meeting_id: meeting,
        attendee_id: AttendeeId::new(),
        provider: Provider::Local,
        node: node.map(str::to_owned),
        started_at,
        last_seen_at: started_at,
        ended_at: None,
    }
}

fn stay_line(m: MeetingId, action: AuditAction) -> AuditEntry {
    AuditEntry { action, meeting_id: Some(m), actor: AuditActor::Attendee, ..Default::default() }
}

#[tokio::test]
async fn sessions_open_are_seen_end_once_and_go_stale_where_they_were_last_seen() {
    on_both(|store| async move {
        let m = meeting();
        store.insert_meeting(&m, &created_line(&m, &AuditActor::System)).await.unwrap();
        // Microseconds: what PostgreSQL keeps.
        let t0 = Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(30);
        let (mine, other, silent) = (session(m.id, Some("node-a"), t0), session(m.id, Some("node-b"), t0), session(m.id, None, t0));
        for s in [&mine, &other, &silent] {
            store.start_session(s, &stay_line(m.id, AuditAction::AttendeeJoined)).await.unwrap();
        }
        let t1 = t0 + chrono::Duration::minutes(10);
        assert_eq!(store.touch_node_sessions("node-a", t1).await.unwrap(), 1, "only this node's sessions");
        assert!(store.touch_session(silent.id, t1).await.unwrap());
        assert!(store.end_session(other.id, t1, &stay_line(m.id, AuditAction::AttendeeLeft)).await.unwrap());
        assert!(!store.end_session(other.id, t1, &stay_line(m.id, AuditAction::AttendeeLeft)).await.unwrap(), "once");
        assert!(!store.touch_session(other.id, t1).await.unwrap(), "an ended session is not seen again");

        // Nothing seen since t1 + 5 min is stale: both open ones end where they were last seen.
        assert_eq!(store.end_stale_sessions(t1 + chrono::Duration::minutes(5)).await.unwrap(), 2);
        let all = store.sessions_between(t0 - chrono::Duration::minutes(1), Utc::now(), Some(m.id)).await.unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|s| s.ended_at == Some(t1)), "{all:?}");
        let log = store.audit_for_meeting(m.id).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(actions, ["meeting.created", "attendee.joined", "attendee.joined", "attendee.joined", "attendee.left"]);
        assert!(store.sessions_between(t0 - chrono::Duration::minutes(1), Utc::now(), Some(MeetingId::new())).await.unwrap().is_empty());
        assert!(store.sessions_between(t1, Utc::now(), None).await.unwrap().iter().all(|s| s.meeting_id != m.id), "by start time");
    })
    .await;
}

#[tokio::test]
async fn meetings_past_their_window_and_idle_meetings_are_found() {
    on_both(|store| async move {
        let now = Utc::now();
        let by = AuditActor::System;
        let ended = MeetingRecord { ends_at: Some(now - chrono::Duration::hours(2)), ..meeting() };
        let ongoing = MeetingRecord { ends_at: Some(now + chrono::Duration::hours(2)), ..meeting() };
        let old = MeetingRecord { created_at: now - chrono::Duration::days(2), ..meeting() };
        let chime = MeetingRecord {
            provider: Provider::Chime,
            provider_meeting: Some(serde_json::json!({"MeetingId": "x"})),
            ends_at: ended.ends_at,
            ..meeting()
        };
        for m in [&ended, &ongoing, &old, &chime] {
            assert_eq!(store.insert_meeting(m, &created_line(m, &by)).await.unwrap(), InsertMeeting::Inserted);
        }
        let ids = |v: Vec<MeetingRecord>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        let cutoff = now - chrono::Duration::hours(1);
        let local = ids(store.meetings_past_window(Provider::Local, cutoff, now - chrono::Duration::days(1)).await.unwrap());
        assert!(local.contains(&ended.id) && local.contains(&old.id) && !local.contains(&ongoing.id), "{local:?}");
        assert!(!local.contains(&chime.id), "by provider");
        let got = store.find_live_meeting(chime.id).await.unwrap().unwrap();
        assert_eq!((got.provider, got.provider_meeting), (Provider::Chime, Some(serde_json::json!({"MeetingId": "x"}))));

        // Idle: someone was in `old` and left an hour ago; someone is still in `ended`.
        let mut left = session(old.id, Some("n"), now - chrono::Duration::hours(2));
        store.start_session(&left, &stay_line(old.id, AuditAction::AttendeeJoined)).await.unwrap();
        store.end_session(left.id, now - chrono::Duration::hours(1), &stay_line(old.id, AuditAction::AttendeeLeft)).await.unwrap();
        left.id = SessionId::new();
        left.meeting_id = ended.id;
        store.start_session(&left, &stay_line(ended.id, AuditAction::AttendeeJoined)).await.unwrap();
        let idle = ids(store.idle_meetings(Provider::Local, now - chrono::Duration::minutes(30), now).await.unwrap());
        assert_eq!(idle, [old.id]);
        assert!(store.idle_meetings(Provider::Local, now - chrono::Duration::hours(2), now).await.unwrap().is_empty(), "not idle long enough");
    })
    .await;
}

/// Applies only the first migration of `dialect` (as a gateway of the previous version left the database).
async fn first_migration_only(dialect: &str) -> sqlx::migrate::Migrator {
    migrations_before(dialect, "20261125000002").await
}

/// The migrations of `dialect` older than `version` (as a gateway from before `version` left the database).
async fn migrations_before(dialect: &str, version: &str) -> sqlx::migrate::Migrator {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
    let mut files: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let older: Vec<_> = files.iter().filter(|f| f.file_name().unwrap().to_str().unwrap() < version).collect();
    assert!(!older.is_empty() && older.len() < files.len(), "{version} splits the {dialect} migrations");
    for f in older {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    drop(dir);
    migrator
}

/// Two live meetings of one appointment from before idempotency existed; the newer one becomes its meeting.
const OLD_ROWS: &str = "INSERT INTO meetings (id, external_meeting_id, appointment_id, provider, media_region, created_at) VALUES \
    ('00000000-0000-4000-8000-000000000001', 'appointment-A', 'A', 'local', 'us-east-1', '2026-11-01T10:00:00+00:00'), \
    ('00000000-0000-4000-8000-000000000002', 'appointment-A', 'A', 'local', 'us-east-1', '2026-11-02T10:00:00+00:00')";

async fn upgraded_store_keeps_the_newest_meeting_per_appointment(store: Store) {
    let found = store.find_live_meeting_for_appointment("A").await.unwrap().expect("a live meeting");
    assert_eq!(found.id.to_string(), "00000000-0000-4000-8000-000000000002", "the newer one");
    assert!(store.find_live_meeting(MeetingId::parse("00000000-0000-4000-8000-000000000001").unwrap()).await.unwrap().is_some());
    let another = MeetingRecord { appointment_id: Some("A".into()), ..meeting() };
    let by = AuditActor::System;
    assert_eq!(store.insert_meeting(&another, &created_line(&another, &by)).await.unwrap(), InsertMeeting::AppointmentTaken);
}

#[tokio::test]
async fn upgrading_a_database_with_repeated_appointments_keeps_every_row_and_picks_the_newest() {
    // SQLite.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    let old = sqlx::SqlitePool::connect(&url).await.unwrap();
    first_migration_only("sqlite").await.run(&old).await.unwrap();
    sqlx::query(OLD_ROWS).execute(&old).await.unwrap();
    old.close().await;
    upgraded_store_keeps_the_newest_meeting_per_appointment(Store::connect(&url).await.unwrap()).await;

    // PostgreSQL, in a fresh schema.
    let Some(schema) = fresh_schema("upgrade_test").await else { return };
    let opts = schema.options();
    let old = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await.unwrap();
    first_migration_only("postgres").await.run(&old).await.unwrap();
    sqlx::query(OLD_ROWS).execute(&old).await.unwrap();
    old.close().await;
    upgraded_store_keeps_the_newest_meeting_per_appointment(Store::connect_postgres(opts).await.unwrap()).await;
    schema.drop().await;
}

fn appointment(modality: Modality) -> AppointmentRecord {
    let now = Utc::now().trunc_subsecs(6);
    AppointmentRecord {
        id: AppointmentId::new(),
        client_name: "Jordan Example".into(),
        client_email: Some("jordan@example.com".into()),
        client_phone: Some("+14155550123".into()),
        practitioner: "Dr. Rivera".into(),
        start_time: now + chrono::Duration::days(2),
        duration_minutes: 30,
        modality,
        telehealth_room_id: None,
        telehealth_link: None,
        status: AppointmentStatus::Scheduled,
        idempotency_key: None,
        created_at: now,
        updated_at: now,
    }
}

fn message(appointment: AppointmentId, due: chrono::DateTime<Utc>) -> OutboxMessage {
    let now = Utc::now().trunc_subsecs(6);
    OutboxMessage {
        id: OutboxId::new(),
        appointment_id: Some(appointment),
        kind: "reminder".into(),
        channel: Channel::Email,
        recipient: "jordan@example.com".into(),
        subject: Some("Appointment Reminder".into()),
        body: "Dear Jordan".into(),
        state: OutboxState::Pending,
        visit_starts_at: None,
        not_before: due.trunc_subsecs(6),
        next_attempt_at: due.trunc_subsecs(6),
        attempts: 0,
        last_error: None,
        claimed_by: None,
        handed_over_at: None,
        sent_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// An appointment, its audit line and its messages, written as the appointments service writes them.
async fn schedule(store: &Store, a: &AppointmentRecord, messages: Vec<OutboxMessage>) -> Result<(), StoreError> {
    let line = AuditEntry { action: AuditAction::AppointmentCreated, appointment_id: Some(a.id), actor: AuditActor::System, ..Default::default() };
    store
        .write((a.clone(), line, messages), |c, (a, line, messages)| {
            Box::pin(async move {
                store::appointments::insert(c, a).await?;
                store::audit::append(c, line).await?;
                store::outbox::enqueue_all(c, messages).await?;
                Ok(())
            })
        })
        .await
}

#[tokio::test]
async fn appointments_round_trip_list_by_range_and_refuse_a_stale_update() {
    on_both(|store| async move {
        let mut a = appointment(Modality::Telehealth);
        a.telehealth_room_id = Some(MeetingId::new());
        a.telehealth_link = Some(format!("https://clinic.example/telehealth-aws.html?meeting={}&invite=x", a.telehealth_room_id.unwrap()));
        let mut b = appointment(Modality::InPerson);
        b.start_time = a.start_time + chrono::Duration::hours(3);
        b.client_email = None;
        schedule(&store, &a, vec![]).await.unwrap();
        schedule(&store, &b, vec![]).await.unwrap();
        assert_eq!(store.find_appointment(a.id).await.unwrap().as_ref(), Some(&a), "every column round-trips");
        let day = store.list_appointments(a.start_time, a.start_time + chrono::Duration::hours(1), None, 100).await.unwrap();
        assert_eq!(day.iter().map(|x| x.id).collect::<Vec<_>>(), [a.id]);
        let both = store.list_appointments(a.start_time, b.start_time + chrono::Duration::hours(1), Some(AppointmentStatus::Scheduled), 100).await.unwrap();
        assert_eq!(both.iter().map(|x| x.id).collect::<Vec<_>>(), [a.id, b.id], "by start time");

        let mut moved = a.clone();
        moved.start_time += chrono::Duration::hours(1);
        moved.updated_at = Utc::now().trunc_subsecs(6) + chrono::Duration::seconds(1);
        let expected = a.updated_at;
        let first = store.write((moved.clone(), expected), |c, (m, e)| Box::pin(store::appointments::update(c, m, *e))).await.unwrap();
        let second = store.write((moved.clone(), expected), |c, (m, e)| Box::pin(store::appointments::update(c, m, *e))).await.unwrap();
        assert!(first && !second, "an update made from a stale read is refused");
        assert_eq!(store.find_appointment(a.id).await.unwrap().unwrap().start_time, moved.start_time);
        let log = store.audit_for_appointment(a.id).await.unwrap();
        assert_eq!(log.iter().map(|l| l.action.as_str()).collect::<Vec<_>>(), ["appointment.created"]);
    })
    .await;
}

#[tokio::test]
async fn an_appointment_its_audit_line_and_its_messages_commit_together_or_not_at_all() {
    on_both(|store| async move {
        let a = appointment(Modality::Telehealth);
        let good = message(a.id, Utc::now());
        // The second message reuses the first one's id: the third statement fails after two succeeded.
        let dup = OutboxMessage { kind: "confirmation".into(), ..good.clone() };
        let err = schedule(&store, &a, vec![good.clone(), dup]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert!(store.find_appointment(a.id).await.unwrap().is_none(), "the appointment is not stored");
        assert!(store.audit_for_appointment(a.id).await.unwrap().is_empty(), "nor its audit line");
        assert!(store.list_outbox(None, Some(a.id), 10).await.unwrap().is_empty(), "nor any message");
        // Written alongside it (on SQLite, in the same batch), others are unaffected.
        let others: Vec<_> = (0..5).map(|_| appointment(Modality::InPerson)).collect();
        let results = futures::future::join_all(others.iter().map(|o| schedule(&store, o, vec![message(o.id, Utc::now())]))).await;
        assert!(results.iter().all(Result::is_ok));
        for o in &others {
            assert!(store.find_appointment(o.id).await.unwrap().is_some());
            assert_eq!(store.list_outbox(None, Some(o.id), 10).await.unwrap().len(), 1);
        }
    })
    .await;
}

#[tokio::test]
async fn many_messages_are_queued_in_statements_of_a_few_rows_and_all_read_back() {
    on_both(|store| async move {
        let a = appointment(Modality::Telehealth);
        // 19 rows: statements of 8, 8 and 3.
        let msgs: Vec<_> = (0..19).map(|i| OutboxMessage { kind: format!("reminder-{i}"), ..message(a.id, Utc::now()) }).collect();
        schedule(&store, &a, msgs.clone()).await.unwrap();
        let mut stored = store.list_outbox(None, Some(a.id), 100).await.unwrap();
        stored.sort_by_key(|m| m.kind.trim_start_matches("reminder-").parse::<u32>().unwrap());
        assert_eq!(stored, msgs, "every column of every row round-trips");
    })
    .await;
}

#[tokio::test]
async fn the_outbox_claims_due_messages_once_settles_them_and_sweeps_abandoned_claims() {
    on_both(|store| async move {
        let a = appointment(Modality::Telehealth);
        let now = Utc::now();
        let due = message(a.id, now - chrono::Duration::seconds(1));
        let later = message(a.id, now + chrono::Duration::hours(1));
        let sms = OutboxMessage { channel: Channel::Sms, recipient: "+14155550123".into(), ..message(a.id, now - chrono::Duration::seconds(1)) };
        schedule(&store, &a, vec![due.clone(), later.clone(), sms.clone()]).await.unwrap();

        let claim = |worker: &'static str, channels: Vec<Channel>| {
            let store = store.clone();
            async move {
                store.write((worker, channels), |c, (w, ch)| Box::pin(store::outbox::claim_due(c, w, ch, Utc::now(), 10))).await.unwrap()
            }
        };
        // Two workers at once: each due e-mail goes to exactly one; SMS is not configured, so it waits.
        let (x, y) = futures::join!(claim("w1", vec![Channel::Email]), claim("w2", vec![Channel::Email]));
        let claimed: Vec<_> = x.iter().chain(&y).collect();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert_eq!((claimed[0].id, claimed[0].state, claimed[0].attempts), (due.id, OutboxState::Sending, 1));

        let settle = |id, state| {
            let store = store.clone();
            async move {
                store.write((id, state), |c, (id, st)| Box::pin(store::outbox::settle(c, *id, *st, Utc::now(), None, None))).await.unwrap()
            }
        };
        assert!(settle(due.id, OutboxState::Sent).await);
        assert!(!settle(due.id, OutboxState::Sent).await, "settled once only");
        assert!(store.outbox_message(due.id).await.unwrap().unwrap().sent_at.is_some());

        // The SMS is claimed and its worker dies before handing it over: the sweep queues it again.
        let sweep = || {
            let store = store.clone();
            async move {
                let before = Utc::now() + chrono::Duration::seconds(1);
                store.write(before, |c, b| Box::pin(store::outbox::sweep_abandoned(c, *b, Utc::now()))).await.unwrap()
            }
        };
        assert_eq!(claim("w3", vec![Channel::Sms]).await.len(), 1);
        assert_eq!(sweep().await, (1, 0));
        assert_eq!(store.outbox_message(sms.id).await.unwrap().unwrap().state, OutboxState::Pending);
        // Claimed again and handed over when its worker dies: it may have arrived, so it becomes unknown and
        // is never sent again by itself.
        assert_eq!(claim("w3", vec![Channel::Sms]).await.len(), 1);
        assert!(store.write(sms.id, |c, id| Box::pin(store::outbox::hand_over(c, *id, Utc::now()))).await.unwrap());
        assert_eq!(sweep().await, (0, 1));
        assert_eq!(store.outbox_message(sms.id).await.unwrap().unwrap().state, OutboxState::Unknown);
        assert!(claim("w3", vec![Channel::Sms]).await.is_empty());
        let retried = store.write(sms.id, |c, id| Box::pin(store::outbox::retry(c, *id, Utc::now()))).await.unwrap();
        assert!(retried, "a person may send it again");
        assert_eq!(claim("w3", vec![Channel::Sms]).await.len(), 1);

        // Withdrawing takes only what has not started to go out.
        let withdrawn = store.write(a.id, |c, id| Box::pin(store::outbox::withdraw_pending(c, *id, Utc::now()))).await.unwrap();
        assert_eq!(withdrawn, 1, "only the later reminder");
        assert_eq!(store.outbox_message(later.id).await.unwrap().unwrap().state, OutboxState::Withdrawn);
    })
    .await;
}

/// The version that gave attendees their role.
const ROLE_MIGRATION: &str = "20261205000001";

/// A meeting and its attendee as a gateway from before roles wrote them (no `role` column).
const PRE_ROLE_ROWS: [&str; 2] = [
    "INSERT INTO meetings (id, external_meeting_id, provider, media_region, created_at) VALUES \
     ('00000000-0000-4000-8000-0000000000a1', 'visit-before-roles', 'local', 'us-east-1', '2026-12-01T10:00:00+00:00')",
    "INSERT INTO attendees (id, meeting_id, external_user_id, created_at) VALUES \
     ('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-0000000000a1', 'Dr. Before', '2026-12-01T10:01:00+00:00')",
];

/// An attendee whose role is neither `host` nor `guest`.
const BAD_ROLE_ROW: &str = "INSERT INTO attendees (id, meeting_id, external_user_id, created_at, role) VALUES \
    ('00000000-0000-4000-8000-0000000000b2', '00000000-0000-4000-8000-0000000000a1', 'Someone', '2026-12-01T10:02:00+00:00', 'admin')";

/// After the role migration: the old attendee is a host, new rows keep the role they are given, and the column
/// takes no role but `host` and `guest`.
async fn upgraded_store_has_roles(store: Store) {
    let (m, old) = (MeetingId::parse("00000000-0000-4000-8000-0000000000a1").unwrap(), AttendeeId::parse("00000000-0000-4000-8000-0000000000b1").unwrap());
    let found = store.find_live_attendee(m, old).await.unwrap().expect("the old attendee is still there");
    assert_eq!((found.external_user_id.as_str(), found.role), ("Dr. Before", Role::Host), "an attendee from before roles is a host");
    let guest = AttendeeRecord { role: Role::Guest, ..attendee(m, "Pat After") };
    assert_eq!(store.insert_attendee(&guest, 250, &joined_line(&guest)).await.unwrap(), InsertAttendee::Inserted);
    let roles: Vec<_> = store.list_attendees(m).await.unwrap().iter().map(|a| (a.attendee_id, a.role)).collect();
    assert_eq!(roles, [(old, Role::Host), (guest.attendee_id, Role::Guest)]);
    let bad = store.write((), |c, _| Box::pin(c.execute(store::stmt(BAD_ROLE_ROW)))).await;
    assert!(matches!(bad, Err(StoreError::Conflict(_))), "a role other than host or guest is refused: {bad:?}");
}

#[tokio::test]
async fn an_attendee_stored_before_roles_existed_is_a_host_after_the_upgrade() {
    // SQLite.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    let old = sqlx::SqlitePool::connect(&url).await.unwrap();
    migrations_before("sqlite", ROLE_MIGRATION).await.run(&old).await.unwrap();
    for row in PRE_ROLE_ROWS {
        sqlx::query(row).execute(&old).await.unwrap();
    }
    old.close().await;
    upgraded_store_has_roles(Store::connect(&url).await.unwrap()).await;

    // PostgreSQL, in a fresh schema.
    let Some(schema) = fresh_schema("role_upgrade_test").await else { return };
    let opts = schema.options();
    let old = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(opts.clone()).await.unwrap();
    migrations_before("postgres", ROLE_MIGRATION).await.run(&old).await.unwrap();
    for row in PRE_ROLE_ROWS {
        sqlx::query(row).execute(&old).await.unwrap();
    }
    old.close().await;
    upgraded_store_has_roles(Store::connect_postgres(opts).await.unwrap()).await;
    schema.drop().await;
}
