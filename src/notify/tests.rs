use super::*;

fn rollback_event() -> Event {
    Event {
        kind: EventKind::RollbackSucceeded,
        doc: json!({
            "schema": SCHEMA,
            "event": "rollback_succeeded",
            "at": "2026-11-30T01:00:00Z",
            "app": "shop",
            "host": "web-1",
            "next_steps": next_steps(EventKind::RollbackSucceeded),
            "command": "deploy",
            "trigger": "deploy",
            "outcome": "rolled_back",
            "exit_code": 11,
            "message": "the health gate failed: HTTP 500; rolled back to 1111111111aa (latest-stable)",
            "from": "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "to": "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "failed_commit": "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "reverted_commits": [{"sha": "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "subject": "add audit table"}],
            "stable_tag": null,
            "backup": "pre-deploy_20261130_005900_1111111",
            "database": {
                "action": "restore",
                "reason": "the deploy applied migration(s) 002_audit; the pre-deploy backup is restored (3 rows were written since the backup: they stay in the failed database, kept aside)",
                "writes_since_backup": 3,
                "kept_database": "shop__failed_20261130010000",
            },
            "durations_ms": {"total": 32300, "rollback": 11100},
        }),
    }
}

#[test]
fn slack_payload_for_a_rollback() {
    insta::assert_json_snapshot!(slack_payload(&rollback_event()));
}

#[test]
fn slack_payload_for_a_backup_failure() {
    let e = Event {
        kind: EventKind::BackupFailed,
        doc: json!({
            "schema": SCHEMA, "event": "backup_failed", "at": "2026-11-30T01:00:00Z",
            "app": "shop", "host": "web-1", "next_steps": next_steps(EventKind::BackupFailed),
            "message": "backup failed at stage preflight: cannot reach the database", "exit_code": 1,
        }),
    };
    insta::assert_json_snapshot!(slack_payload(&e));
}

/// The app "shop" in /srv/shop.
fn shop() -> Loaded {
    let config = crate::config::parse("[database]\nname = \"shop\"\n", Path::new("x")).unwrap();
    Loaded {
        config,
        path: "x".into(),
        app_dir: "/srv/shop".into(),
    }
}

#[test]
fn generic_payload_of_a_recorded_rollback() {
    let loaded = shop();
    let release: Release = serde_json::from_value(json!({
            "id": "deploy-20261130-010000", "at": "2026-11-30T01:00:32Z", "command": "deploy",
            "trigger": "deploy", "from": "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "to": "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "outcome": "rolled_back",
            "exit_code": 11, "backup": "pre-deploy_20261130_005900_1111111", "stable_tag": null,
            "failed_commit": "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "db_action": "restore",
            "db_reason": "the deploy applied migration(s) 002_audit", "writes_since_backup": 3,
            "kept_database": "shop__failed_20261130010000",
            "reverted_commits": [{"sha": "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "subject": "add audit table"}],
            "message": "the health gate failed; rolled back", "total_ms": 32300, "rollback_ms": 11100
        }))
        .unwrap();
    let event = Event::from_release(&loaded, &release, None).unwrap();
    assert_eq!(event.kind, EventKind::RollbackSucceeded);
    insta::assert_json_snapshot!(event.doc, { ".at" => "[time]", ".host" => "[host]" });
}

/// A refused deploy is announced as a failed backup because the refusal says so,
/// not because of the words in its message.
#[test]
fn a_refusal_is_a_failed_backup_by_its_reason_not_its_words() {
    use crate::journal::Refusal;
    let loaded = shop();
    let release: Release = serde_json::from_value(json!({
            "at": "2026-11-30T01:00:32Z", "command": "deploy", "trigger": "deploy",
            "from": null, "to": null, "outcome": "refused", "exit_code": 10, "backup": null,
            "stable_tag": null, "failed_commit": null, "db_action": null, "db_reason": null,
            "writes_since_backup": null, "kept_database": null, "reverted_commits": [],
            "message": "the deploy was refused before any change to production: backup failed at stage dump",
            "total_ms": 10, "rollback_ms": null
        }))
        .unwrap();
    let kind = |why| Event::from_release(&loaded, &release, why).unwrap().kind;
    assert_eq!(kind(Some(Refusal::BackupFailed)), EventKind::BackupFailed);
    assert_eq!(kind(Some(Refusal::Locked)), EventKind::DeployRefused);
    assert_eq!(kind(Some(Refusal::BeforeChange)), EventKind::DeployRefused);
    assert_eq!(kind(None), EventKind::DeployRefused);
}

/// The Slack message and the generic document of every event kind.
#[test]
fn every_event_kind_has_its_payloads() {
    let loaded = shop();
    let release = |outcome: &str, exit: i32, message: &str| -> Release {
        serde_json::from_value(json!({
                "id": "d1", "at": "2026-11-30T01:00:32Z", "command": "deploy", "trigger": "deploy",
                "from": "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "to": "3333333333cccccccccccccccccccccccccccccc",
                "outcome": outcome, "exit_code": exit, "backup": "pre-deploy_20261130_005900_1111111",
                "stable_tag": "stable-20261130-010032", "failed_commit": null, "db_action": null,
                "db_reason": null, "writes_since_backup": null, "kept_database": null,
                "reverted_commits": [], "message": message, "total_ms": 12100, "rollback_ms": null
            }))
            .unwrap()
    };
    let events = [
            Event::from_release(&loaded, &release("deployed", 0, "deployed 3333333333cc and marked it stable"), None).unwrap(),
            Event::from_release(&loaded, &release("rollback_failed", 12, "the health gate failed; MANUAL INTERVENTION REQUIRED: the stable release itself is unhealthy"), None).unwrap(),
            Event::from_release(&loaded, &release("refused", 10, "another deploy or rollback holds the lock"), Some(crate::journal::Refusal::Locked)).unwrap(),
            Event::backup_failed(&loaded, "backup failed at stage dump: pg_dump exited with status 1"),
            Event::verification_failed(&loaded, &[("manual_20261129_030000_1111111".into(), "sha256 mismatch".into())]),
        ];
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "deploy_succeeded",
            "rollback_failed",
            "deploy_refused",
            "backup_failed",
            "verification_failed"
        ]
    );
    for e in &events {
        let name = e.kind.name();
        insta::assert_json_snapshot!(format!("{name}_generic"), e.doc, { ".at" => "[time]", ".host" => "[host]" });
        let mut slack = slack_payload(e);
        // The host is inside the text of a field.
        let h = host();
        let text = if h.is_empty() {
            slack.to_string()
        } else {
            slack.to_string().replace(&h, "[host]")
        };
        slack = serde_json::from_str(&text).unwrap();
        insta::assert_json_snapshot!(format!("{name}_slack"), slack);
    }
}

#[test]
fn hosts_are_shown_without_the_secret_path() {
    assert_eq!(
        host_of("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
        "https://hooks.slack.com"
    );
    assert_eq!(
        host_of("http://127.0.0.1:9999/hook?token=abc"),
        "http://127.0.0.1:9999"
    );
}

#[test]
fn hooks_per_event() {
    let n = NotifyConfig {
        on_deploy: Some("d".into()),
        on_rollback: Some("r".into()),
        on_failure: Some("f".into()),
        on_backup_failure: Some("b".into()),
        ..Default::default()
    };
    let names = |k| {
        hooks_for(&n, k)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(EventKind::DeploySucceeded), ["on_deploy"]);
    assert_eq!(names(EventKind::RollbackSucceeded), ["on_rollback"]);
    assert_eq!(
        names(EventKind::RollbackFailed),
        ["on_rollback", "on_failure"]
    );
    assert_eq!(
        names(EventKind::BackupFailed),
        ["on_backup_failure", "on_failure"]
    );
    assert_eq!(names(EventKind::DeployRefused), ["on_failure"]);
}
