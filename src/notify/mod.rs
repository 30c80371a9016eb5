//! Every outcome is loud: a Slack incoming webhook, a generic JSON webhook (schema
//! `stablehand.event/v1`), command hooks (`STABLEHAND_*` environment, the event as JSON on
//! stdin), and GitHub Actions outputs and step summary. Delivery is retried with backoff
//! inside a time bound; a failed notification is recorded and never changes an outcome.
//! Webhook URLs come from the environment or a file, never the config file, and are never
//! printed (they carry their secret in the path): deliveries name the host only.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Loaded, NotifyConfig};
use crate::journal::Release;
use crate::process::Cmd;

/// The version of the generic webhook's JSON document.
pub const SCHEMA: &str = "stablehand.event/v1";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    DeploySucceeded,
    RollbackSucceeded,
    /// The rollback failed or the stable release itself is unhealthy.
    RollbackFailed,
    /// The deploy was refused before changing production.
    DeployRefused,
    BackupFailed,
    /// The backup stands locally; a remote copy failed.
    UploadFailed,
    VerificationFailed,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::DeploySucceeded => "deploy_succeeded",
            EventKind::RollbackSucceeded => "rollback_succeeded",
            EventKind::RollbackFailed => "rollback_failed",
            EventKind::DeployRefused => "deploy_refused",
            EventKind::BackupFailed => "backup_failed",
            EventKind::UploadFailed => "upload_failed",
            EventKind::VerificationFailed => "verification_failed",
        }
    }
}

/// One event, as the generic webhook document.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub doc: Value,
}

pub use crate::journal::Delivery;

fn app_name(loaded: &Loaded) -> String {
    loaded
        .app_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into())
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

fn next_steps(kind: EventKind) -> &'static str {
    match kind {
        EventKind::DeploySucceeded => "nothing to do",
        EventKind::RollbackSucceeded => {
            "production is healthy on the stable release; fix the failed commit and deploy again (the failed database is kept aside: `stablehand status`)"
        }
        EventKind::RollbackFailed => {
            "MANUAL INTERVENTION REQUIRED: run `stablehand status`, read the app's logs, then `stablehand deploy --ref <good commit>` or `stablehand rollback --to <commit>`"
        }
        EventKind::DeployRefused => {
            "production was not changed; fix the cause in the message and deploy again"
        }
        EventKind::BackupFailed => {
            "no new backup exists: check the database and disk, then `stablehand backup`"
        }
        EventKind::UploadFailed => {
            "the backup is stored locally but not offsite: check the remote and its credentials, then `stablehand backup sync`"
        }
        EventKind::VerificationFailed => {
            "a backup failed verification: `stablehand backup verify --all`, and take a new backup"
        }
    }
}

impl Event {
    fn new(loaded: &Loaded, kind: EventKind, fields: Value) -> Event {
        let mut doc = json!({
            "schema": SCHEMA,
            "event": kind.name(),
            "at": jiff::Timestamp::now().to_string(),
            "app": app_name(loaded),
            "host": host(),
            "next_steps": next_steps(kind),
        });
        if let (Value::Object(d), Value::Object(f)) = (&mut doc, fields) {
            d.extend(f);
        }
        Event { kind, doc }
    }

    /// The event of a finished deploy, rollback or recover (None for a plan or "nothing
    /// to do"); `refusal` says why a refused one was refused.
    pub fn from_release(
        loaded: &Loaded,
        r: &Release,
        refusal: Option<crate::journal::Refusal>,
    ) -> Option<Event> {
        let kind = match r.outcome {
            crate::journal::OutcomeKind::Deployed => EventKind::DeploySucceeded,
            crate::journal::OutcomeKind::RolledBack => EventKind::RollbackSucceeded,
            crate::journal::OutcomeKind::RollbackFailed => EventKind::RollbackFailed,
            crate::journal::OutcomeKind::Refused
                if refusal == Some(crate::journal::Refusal::BackupFailed) =>
            {
                EventKind::BackupFailed
            }
            crate::journal::OutcomeKind::Refused => EventKind::DeployRefused,
            crate::journal::OutcomeKind::Planned | crate::journal::OutcomeKind::NothingToDo => {
                return None
            }
        };
        Some(Event::new(
            loaded,
            kind,
            json!({
                "command": r.command,
                "trigger": r.trigger,
                "outcome": r.outcome,
                "exit_code": r.exit_code,
                "message": crate::redact::redact_text(&r.message),
                "from": r.from,
                "to": r.to,
                "failed_commit": r.failed_commit,
                "reverted_commits": r.reverted_commits,
                "stable_tag": r.stable_tag,
                "backup": r.backup,
                "database": {
                    "action": r.db_action,
                    "reason": r.db_reason,
                    "writes_since_backup": r.writes_since_backup,
                    "kept_database": r.kept_database,
                },
                "durations_ms": { "total": r.total_ms, "rollback": r.rollback_ms },
            }),
        ))
    }

    /// A backup that failed (`backup create`, or a deploy's backup step).
    pub fn backup_failed(loaded: &Loaded, error: &str) -> Event {
        Event::new(
            loaded,
            EventKind::BackupFailed,
            json!({ "message": crate::redact::redact_text(error), "exit_code": 1 }),
        )
    }

    /// A backup stored locally whose remote copies failed.
    pub fn upload_failed(loaded: &Loaded, created: &crate::backup::Created) -> Event {
        let failures: Vec<Value> = created
            .upload_failures
            .iter()
            .map(|f| json!({ "remote": f.remote, "problem": crate::redact::redact_text(&f.error) }))
            .collect();
        Event::new(
            loaded,
            EventKind::UploadFailed,
            json!({
                "message": format!("backup {} is stored locally, but {} upload(s) failed", created.backup.id, failures.len()),
                "exit_code": 1,
                "backup": created.backup.id,
                "failures": failures,
            }),
        )
    }

    /// Backups that failed verification.
    pub fn verification_failed(loaded: &Loaded, failures: &[(String, String)]) -> Event {
        let list: Vec<Value> = failures
            .iter()
            .map(|(id, problem)| json!({ "backup": id, "problem": crate::redact::redact_text(problem) }))
            .collect();
        Event::new(
            loaded,
            EventKind::VerificationFailed,
            json!({
                "message": format!("{} backup(s) failed verification", failures.len()),
                "exit_code": 1,
                "failures": list,
            }),
        )
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }

    fn short(&self, key: &str) -> String {
        self.str(key)
            .map(|s| crate::git::abbrev(s, 12).to_string())
            .unwrap_or_else(|| "-".into())
    }
}

/// The Slack message: a fallback text and blocks with the outcome, the commits, the
/// database action and why, durations and next steps.
pub fn slack_payload(e: &Event) -> Value {
    let d = &e.doc;
    let icon = match e.kind {
        EventKind::DeploySucceeded => ":white_check_mark:",
        EventKind::RollbackSucceeded => ":rewind:",
        _ => ":rotating_light:",
    };
    let title = match e.kind {
        EventKind::DeploySucceeded => "Deploy succeeded",
        EventKind::RollbackSucceeded => "Deploy failed: rolled back automatically",
        EventKind::RollbackFailed => "Rollback failed: manual intervention required",
        EventKind::DeployRefused => "Deploy refused: production unchanged",
        EventKind::BackupFailed => "Backup failed",
        EventKind::UploadFailed => "Backup upload failed: the backup is only local",
        EventKind::VerificationFailed => "Backup verification failed",
    };
    let app = e.str("app").unwrap_or("app");
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*App*\n{app} on {}", e.str("host").unwrap_or(""))}),
    ];
    if d.get("outcome").is_some() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Outcome*\n{} (exit {})", e.str("outcome").unwrap_or(""), d["exit_code"])}));
        fields.push(json!({"type": "mrkdwn", "text": format!("*Failed commit*\n`{}`", e.short("failed_commit"))}));
        fields
            .push(json!({"type": "mrkdwn", "text": format!("*Now running*\n`{}`", e.short("to"))}));
        if let Some(db) = d["database"]["action"].as_str() {
            fields.push(json!({"type": "mrkdwn", "text": format!("*Database*\n{db}")}));
        }
        if let Some(w) = d["database"]["writes_since_backup"].as_u64() {
            fields.push(json!({"type": "mrkdwn", "text": format!("*Writes kept aside*\n{w}")}));
        }
        fields.push(json!({"type": "mrkdwn", "text": format!(
            "*Took*\n{:.1}s total{}",
            d["durations_ms"]["total"].as_f64().unwrap_or(0.0) / 1000.0,
            d["durations_ms"]["rollback"].as_f64().map(|r| format!(", rollback {:.1}s", r / 1000.0)).unwrap_or_default()
        )}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("{title}: {app}")}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} {}", e.str("message").unwrap_or(""))}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(reason) = d["database"]["reason"].as_str() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Database decision:* {reason}")}}));
    }
    if let Some(commits) = d["reverted_commits"].as_array().filter(|c| !c.is_empty()) {
        let lines: Vec<String> = commits
            .iter()
            .map(|c| {
                format!(
                    "• `{}` {}",
                    crate::git::abbrev(c["sha"].as_str().unwrap_or(""), 7),
                    c["subject"].as_str().unwrap_or("")
                )
            })
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Reverted commits*\n{}", lines.join("\n"))}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Next: {}", e.str("next_steps").unwrap_or(""))}]}));
    json!({ "text": format!("{title}: {app}: {}", e.str("message").unwrap_or("")), "blocks": blocks })
}

/// Reads a secret URL from the environment variable or file named in the config.
fn secret_url(
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
    app_dir: &Path,
) -> Result<Option<String>, String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
            _ => Err(format!("the environment variable {var} is not set")),
        };
    }
    if let Some(f) = file {
        let path = app_dir.join(f);
        return std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("reading {}: {e}", path.display()));
    }
    Ok(None)
}

/// A URL shown without path or query (a webhook's secret lives there).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "an invalid URL".into())
}

/// POSTs `body`, retrying with backoff (0.5 s, 1 s, 2 s, ...) until it is accepted, the
/// attempts run out, or `bound` has passed.
pub fn post_json(
    channel: &str,
    url: &str,
    body: &Value,
    attempts: u32,
    bound: Duration,
) -> Delivery {
    let started = Instant::now();
    let target = host_of(url);
    let mut tries = 0;
    let mut error = None;
    let mut backoff = Duration::from_millis(500);
    while tries < attempts.max(1) {
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            error = Some(format!(
                "gave up after {tries} attempt(s): the {}s bound passed",
                bound.as_secs()
            ));
            break;
        }
        tries += 1;
        let agent = ureq::AgentBuilder::new()
            .timeout(left.min(Duration::from_secs(10)))
            .redirects(0)
            .build();
        let request = agent.post(url).set("Content-Type", "application/json").set(
            "User-Agent",
            concat!("stablehand/", env!("CARGO_PKG_VERSION")),
        );
        match request.send_string(&body.to_string()) {
            Ok(_) => {
                return Delivery {
                    channel: channel.into(),
                    target,
                    ok: true,
                    attempts: tries,
                    error: None,
                    took_ms: started.elapsed().as_millis() as u64,
                };
            }
            Err(ureq::Error::Status(code, _)) => error = Some(format!("HTTP {code}")),
            Err(ureq::Error::Transport(t)) => error = Some(t.kind().to_string()),
        }
        let left = bound.saturating_sub(started.elapsed());
        if tries < attempts && left > backoff {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
    Delivery {
        channel: channel.into(),
        target,
        ok: false,
        attempts: tries,
        error,
        took_ms: started.elapsed().as_millis() as u64,
    }
}

/// Runs a hook: the event's fields as `STABLEHAND_*` variables, the JSON on stdin.
fn run_hook(name: &str, command: &str, e: &Event, app_dir: &Path, bound: Duration) -> Delivery {
    let started = Instant::now();
    let mut cmd = Cmd::new("sh")
        .args(["-c", command])
        .current_dir(app_dir)
        .timeout(bound)
        .env("STABLEHAND_EVENT", e.kind.name());
    for key in [
        "outcome",
        "message",
        "from",
        "to",
        "failed_commit",
        "stable_tag",
        "backup",
        "app",
        "host",
        "next_steps",
    ] {
        if let Some(v) = e.str(key) {
            cmd = cmd.env(format!("STABLEHAND_{}", key.to_uppercase()), v);
        }
    }
    if let Some(code) = e.doc.get("exit_code").and_then(Value::as_i64) {
        cmd = cmd.env("STABLEHAND_EXIT_CODE", code.to_string());
    }
    if let Some(a) = e.doc["database"]["action"].as_str() {
        cmd = cmd.env("STABLEHAND_DATABASE_ACTION", a);
    }
    let result = (|| -> anyhow::Result<()> {
        let mut running = cmd.spawn_with_stdin()?;
        if let Some(mut stdin) = running.stdin.take() {
            let _ = stdin.write_all(serde_json::to_string(&e.doc)?.as_bytes());
        }
        if let Some(mut out) = running.stdout.take() {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        }
        running.wait()?;
        Ok(())
    })();
    Delivery {
        channel: format!("hook:{name}"),
        target: command.to_string(),
        ok: result.is_ok(),
        attempts: 1,
        error: result.err().map(|e| format!("{e:#}")),
        took_ms: started.elapsed().as_millis() as u64,
    }
}

/// The hooks that fire for an event.
fn hooks_for(n: &NotifyConfig, kind: EventKind) -> Vec<(&'static str, &String)> {
    let candidates = match kind {
        EventKind::DeploySucceeded => vec![("on_deploy", &n.on_deploy)],
        EventKind::RollbackSucceeded => vec![("on_rollback", &n.on_rollback)],
        EventKind::RollbackFailed => vec![
            ("on_rollback", &n.on_rollback),
            ("on_failure", &n.on_failure),
        ],
        EventKind::DeployRefused => vec![("on_failure", &n.on_failure)],
        EventKind::BackupFailed | EventKind::UploadFailed | EventKind::VerificationFailed => vec![
            ("on_backup_failure", &n.on_backup_failure),
            ("on_failure", &n.on_failure),
        ],
    };
    candidates
        .into_iter()
        .filter_map(|(name, cmd)| cmd.as_ref().map(|c| (name, c)))
        .collect()
}

/// Delivers an event to every configured channel. Never fails: problems are in the
/// returned deliveries (and warned about).
pub fn send(loaded: &Loaded, e: &Event) -> Vec<Delivery> {
    let n = &loaded.config.notify;
    let mut out = Vec::new();
    let failed = |channel: &str, target: &str, error: String| Delivery {
        channel: channel.into(),
        target: target.into(),
        ok: false,
        attempts: 0,
        error: Some(error),
        took_ms: 0,
    };
    match secret_url(&n.slack_webhook_env, &n.slack_webhook_file, &loaded.app_dir) {
        Ok(Some(url)) => out.push(post_json(
            "slack",
            &url,
            &slack_payload(e),
            n.attempts,
            n.timeout,
        )),
        Ok(None) => {}
        Err(why) => out.push(failed("slack", "-", why)),
    }
    match secret_url(&n.webhook_url_env, &n.webhook_url_file, &loaded.app_dir) {
        Ok(Some(url)) => out.push(post_json("webhook", &url, &e.doc, n.attempts, n.timeout)),
        Ok(None) => {}
        Err(why) => out.push(failed("webhook", "-", why)),
    }
    for (name, command) in hooks_for(n, e.kind) {
        out.push(run_hook(name, command, e, &loaded.app_dir, n.timeout));
    }
    for d in out.iter().filter(|d| !d.ok) {
        tracing::warn!(
            "notification {} to {} failed: {}",
            d.channel,
            d.target,
            d.error.as_deref().unwrap_or("unknown error")
        );
    }
    out
}

/// A backup failed: counted in the metrics, and announced.
/// Announces remote copies that failed (the local backup stands).
pub fn announce_upload_failure(loaded: &Loaded, created: &crate::backup::Created) {
    crate::metrics::Counters::note_upload_failure(&loaded.state_dir());
    send(loaded, &Event::upload_failed(loaded, created));
}

pub fn announce_backup_failure(loaded: &Loaded, error: &anyhow::Error) {
    crate::metrics::Counters::note_backup_failure(&loaded.state_dir());
    send(loaded, &Event::backup_failed(loaded, &format!("{error:#}")));
}

/// Announces the backups among `results` (id, ok, problem) that failed verification;
/// returns how many did.
pub fn announce_failed_verifications<'a>(
    loaded: &Loaded,
    results: impl IntoIterator<Item = (&'a str, bool, Option<&'a String>)>,
) -> usize {
    let failures: Vec<(String, String)> = results
        .into_iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(id, _, problem)| (id.to_string(), problem.cloned().unwrap_or_default()))
        .collect();
    if !failures.is_empty() {
        send(loaded, &Event::verification_failed(loaded, &failures));
    }
    failures.len()
}

/// The dead-man's switch: "a backup succeeded just now", posted to the URL in the
/// environment variable `var` (alerts.ping_url_env). A failed ping is warned about.
pub fn ping_after_backup(loaded: &Loaded, var: &str, backup: &str) {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => {
            let d = post_json(
                "ping",
                url.trim(),
                &json!({ "backup": backup }),
                loaded.config.notify.attempts,
                loaded.config.notify.timeout,
            );
            if !d.ok {
                tracing::warn!(
                    "the backup succeeded but the ping to {} failed: {}",
                    d.target,
                    d.error.unwrap_or_default()
                );
            }
        }
        _ => tracing::warn!("alerts.ping_url_env names {var}, which is not set: no ping sent"),
    }
}

/// GitHub Actions: outputs (outcome, deployed commit, stable tag, backup id) to
/// `$GITHUB_OUTPUT` and a Markdown summary to `$GITHUB_STEP_SUMMARY`, when set.
pub fn github_actions(e: &Event) {
    let d = &e.doc;
    if let Ok(path) = std::env::var("GITHUB_OUTPUT") {
        let lines = format!(
            "outcome={}\nexit_code={}\ndeployed_commit={}\nstable_tag={}\nbackup_id={}\n",
            e.str("outcome").unwrap_or(e.kind.name()),
            d["exit_code"],
            e.str("to").unwrap_or(""),
            e.str("stable_tag").unwrap_or(""),
            e.str("backup").unwrap_or("")
        );
        append(&path, &lines);
    }
    if let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY") {
        let mut md = format!(
            "## stablehand: {}\n\n{}\n\n| | |\n|---|---|\n| outcome | {} (exit {}) |\n| now running | `{}` |\n",
            e.kind.name().replace('_', " "),
            e.str("message").unwrap_or(""),
            e.str("outcome").unwrap_or("-"),
            d["exit_code"],
            e.short("to"),
        );
        if e.str("failed_commit").is_some() {
            md.push_str(&format!(
                "| failed commit | `{}` |\n",
                e.short("failed_commit")
            ));
        }
        if let Some(tag) = e.str("stable_tag") {
            md.push_str(&format!("| stable tag | `{tag}` |\n"));
        }
        if let Some(b) = e.str("backup") {
            md.push_str(&format!("| pre-deploy backup | `{b}` |\n"));
        }
        if let Some(a) = d["database"]["action"].as_str() {
            md.push_str(&format!(
                "| database | {a}: {} |\n",
                d["database"]["reason"].as_str().unwrap_or("")
            ));
        }
        md.push_str(&format!("\nNext: {}\n", e.str("next_steps").unwrap_or("")));
        append(&path, &md);
    }
}

fn append(path: &str, text: &str) {
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = result {
        tracing::warn!("writing GitHub Actions output {path}: {e}");
    }
}

#[cfg(test)]
mod tests;
