//! Notifications through the real binary to a local webhook receiver (axum on
//! 127.0.0.1:0): the Slack and generic payloads of a failed backup, a hook with the event
//! on stdin, retries until a flaky receiver accepts, a bound on a receiver that never
//! answers, and no secret in any payload or log line.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::App;

/// How the receiver answers.
#[derive(Clone, Copy)]
pub enum Mode {
    Accept,
    /// 500 for the first N requests, then 200.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

/// A webhook receiver on 127.0.0.1:0 that records every request (path, body).
pub struct Receiver {
    pub base: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub fn start(mode: Mode) -> Receiver {
        let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = received.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app =
                    axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
                        let log = log.clone();
                        async move {
                            let n = {
                                let mut log = log.lock().unwrap();
                                log.push((uri.path().to_string(), body));
                                log.len()
                            };
                            match mode {
                                Mode::Accept => axum::http::StatusCode::OK,
                                Mode::FailFirst(k) if n <= k => {
                                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                                }
                                Mode::FailFirst(_) => axum::http::StatusCode::OK,
                                Mode::Hang => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    axum::http::StatusCode::OK
                                }
                            }
                        }
                    });
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Receiver {
            base: format!("http://{addr}"),
            received,
        }
    }

    pub fn bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect()
    }
}

/// A direct-mode app whose database does not exist: `backup` fails at preflight.
fn failing_backup_app(notify: &str) -> App {
    let mut app = App::new(&format!(
        "[database]\nmode = \"direct\"\n\n[notify]\n{notify}"
    ));
    // Port 9 on loopback: nothing listens, the connection is refused at once.
    app.env.push((
        "DATABASE_URL".into(),
        "postgresql://app:db-Secret-9@127.0.0.1:9/none".into(),
    ));
    app
}

const SECRET_PATH: &str = "services/T0001/B0001/sEcReTtOkEn";

#[test]
fn a_failed_backup_is_announced_on_slack_the_webhook_and_the_hook() {
    let rx = Receiver::start(Mode::Accept);
    let mut app = failing_backup_app(
        "slack_webhook_env = \"SLACK_WEBHOOK_URL\"\nwebhook_url_env = \"DEPLOY_WEBHOOK_URL\"\non_backup_failure = \"cat > hook-stdin.json; env | grep ^STABLEHAND_ | sort > hook-env.txt\"\n",
    );
    app.env.push((
        "SLACK_WEBHOOK_URL".into(),
        format!("{}/slack/{SECRET_PATH}", rx.base),
    ));
    app.env.push((
        "DEPLOY_WEBHOOK_URL".into(),
        format!("{}/generic/{SECRET_PATH}", rx.base),
    ));
    let out = app.cmd().args(["-v", "backup"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the backup's own exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);

    let slack = rx.bodies(&format!("/slack/{SECRET_PATH}"));
    assert_eq!(slack.len(), 1, "{stderr}");
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Backup failed"),
        "{:#}",
        slack[0]
    );
    assert_eq!(slack[0]["blocks"][0]["type"], "header");
    let generic = rx.bodies(&format!("/generic/{SECRET_PATH}"));
    assert_eq!(generic.len(), 1);
    insta::assert_json_snapshot!("generic_backup_failed", generic[0], {
        ".at" => "[time]", ".host" => "[host]", ".app" => "[app]", ".message" => "[message]"
    });
    assert_eq!(generic[0]["schema"], "stablehand.event/v1");
    assert_eq!(generic[0]["event"], "backup_failed");
    assert!(generic[0]["message"]
        .as_str()
        .unwrap()
        .contains("cannot reach the database"));

    let stdin: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(app.path().join("hook-stdin.json")).unwrap())
            .unwrap();
    assert_eq!(stdin["event"], "backup_failed");
    let env = fs::read_to_string(app.path().join("hook-env.txt")).unwrap();
    assert!(env.contains("STABLEHAND_EVENT=backup_failed"), "{env}");

    // No secret anywhere: not the webhook's token, not the database password.
    let everything = format!(
        "{stderr}{}{}{env}",
        String::from_utf8_lossy(&out.stdout),
        rx.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.as_str())
            .collect::<String>()
    );
    assert!(!everything.contains("sEcReTtOkEn"), "{everything}");
    assert!(!everything.contains("db-Secret-9"), "{everything}");
}

#[test]
fn a_flaky_receiver_gets_exactly_one_delivery_after_three_failures() {
    let rx = Receiver::start(Mode::FailFirst(3));
    let mut app = failing_backup_app("webhook_url_env = \"DEPLOY_WEBHOOK_URL\"\n");
    app.env
        .push(("DEPLOY_WEBHOOK_URL".into(), format!("{}/hook", rx.base)));
    let out = app.cmd().arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let got = rx.bodies("/hook");
    assert_eq!(got.len(), 4, "three refused, then one accepted");
    assert!(got.iter().all(|b| b["event"] == "backup_failed"));
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_the_command_past_the_bound() {
    let rx = Receiver::start(Mode::Hang);
    let mut app =
        failing_backup_app("webhook_url_env = \"DEPLOY_WEBHOOK_URL\"\ntimeout = \"2s\"\n");
    app.env
        .push(("DEPLOY_WEBHOOK_URL".into(), format!("{}/hook", rx.base)));
    let started = Instant::now();
    let out = app.cmd().arg("backup").output().unwrap();
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed notification changes nothing"
    );
    assert!(
        took < Duration::from_secs(6),
        "bounded by notify.timeout: took {took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notification webhook to http://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn a_missing_webhook_variable_is_reported_not_fatal() {
    let app = failing_backup_app(
        "slack_webhook_env = \"SLACK_WEBHOOK_URL\"\non_backup_failure = \"exit 7\"\n",
    );
    let out = app.cmd().arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SLACK_WEBHOOK_URL is not set"), "{stderr}");
    assert!(stderr.contains("hook:on_backup_failure"), "{stderr}");
}

#[test]
fn a_successful_backup_pings_the_dead_mans_switch() {
    let Some(pg) = crate::support::pg() else {
        return;
    };
    let db = pg.sample_db();
    let rx = Receiver::start(Mode::Accept);
    let mut app = App::direct(
        &pg.url(&db),
        "\n[alerts]\nping_url_env = \"BACKUP_PING_URL\"\n",
    );
    app.env.push((
        "BACKUP_PING_URL".into(),
        format!("{}/ping/abc-uuid", rx.base),
    ));
    let id = app.backup();
    let pings = rx.bodies("/ping/abc-uuid");
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0]["backup"], id);
}

#[test]
fn a_refused_deploy_and_a_failed_verification_are_announced() {
    let Some(pg) = crate::support::pg() else {
        return;
    };
    let db = pg.sample_db();
    let rx = Receiver::start(Mode::Accept);
    // Not a git work tree: the deploy is refused at preflight (exit 10).
    let mut app = App::direct(
        &pg.url(&db),
        "\n[notify]\nwebhook_url_env = \"DEPLOY_WEBHOOK_URL\"\n",
    );
    app.env
        .push(("DEPLOY_WEBHOOK_URL".into(), format!("{}/events", rx.base)));
    let out = app.cmd().arg("deploy").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let events = rx.bodies("/events");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "deploy_refused");
    assert_eq!(events[0]["exit_code"], 10);
    let history = app.json(&["history"]);
    assert_eq!(
        history[0]["outcome"], "refused",
        "recorded too: {history:#}"
    );

    // A backup damaged on disk: its verification fails, and that is announced.
    let id = app.backup();
    app.truncate_backup(&id, |len| len - 10);
    assert_eq!(app.exit_code(&["backup", "verify", &id]), Some(1));
    let events = rx.bodies("/events");
    let v = events.last().unwrap();
    assert_eq!(v["event"], "verification_failed", "{events:#?}");
    assert_eq!(v["failures"][0]["backup"], id);
}
