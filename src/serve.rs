//! `stablehand serve`: a long-running process that runs the `[schedule]` jobs (backups,
//! restore tests, pruning) and serves a dashboard (server-rendered HTML, no JavaScript),
//! `/metrics` and `/api/status`. It binds to loopback by default; any other address
//! needs a token (`serve.token_env`), checked on every request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use indicatif::HumanBytes;
use jiff::Timestamp;

use crate::config::Loaded;
use crate::lock::{AppLock, Held, Holder};

struct AppState {
    loaded: Loaded,
    token: Option<String>,
}

/// Runs until interrupted (SIGINT/SIGTERM).
pub fn serve(loaded: Loaded, listen: Option<&str>) -> anyhow::Result<()> {
    let listen = listen.unwrap_or(&loaded.config.serve.listen).to_string();
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("{listen:?} is not an address like 127.0.0.1:9750"))?;
    let token = match &loaded.config.serve.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => bail!("serve.token_env names {var}, which is not set; set it (the token) or remove serve.token_env"),
        },
        None => None,
    };
    if !addr.ip().is_loopback() && token.is_none() {
        bail!(
            "serve refuses to listen on {addr} without a token: anyone who reaches it would see the deploy history; set serve.token_env (and that variable), or listen on 127.0.0.1"
        );
    }
    let jobs = scheduled_jobs(&loaded)?;
    let state = Arc::new(AppState { loaded, token });
    if !jobs.is_empty() {
        let st = state.clone();
        std::thread::spawn(move || run_scheduler(&st.loaded, jobs));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let bound = listener.local_addr()?;
        errln!("stablehand serve: listening on http://{bound}");
        let app = axum::Router::new()
            .route("/", axum::routing::get(dashboard))
            .route("/metrics", axum::routing::get(metrics))
            .route("/api/status", axum::routing::get(api_status))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_token,
            ))
            .with_state(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                while !crate::process::interrupted() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
            .context("serving")
    })
}

#[derive(serde::Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

/// Every request carries the token when one is configured.
fn authorized(state: &AppState, headers: &HeaderMap, q: &TokenQuery) -> bool {
    let Some(want) = &state.token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(q.token.as_deref()).unwrap_or("");
    // Constant-time comparison.
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Every route is behind the token rule: a request without it gets 401 before any
/// handler runs.
async fn require_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorized(&state, &headers, &q) {
        return refused();
    }
    next.run(request).await
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "a token is required: Authorization: Bearer <token> (or ?token=)\n",
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a request handler panicked")
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text =
        blocking(move || crate::metrics::render(&crate::metrics::gather(&state.loaded))).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(serde::Serialize)]
struct ApiStatus {
    status: crate::deploy::status::Status,
    alerts: Vec<crate::check::Problem>,
}

async fn api_status(State(state): State<Arc<AppState>>) -> Response {
    let result = blocking(move || -> anyhow::Result<ApiStatus> {
        Ok(ApiStatus {
            status: crate::deploy::status::status(&state.loaded)?,
            alerts: crate::check::check(&state.loaded)?.problems,
        })
    })
    .await;
    match result {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

struct Row {
    when: String,
    what: String,
    outcome: String,
    class: &'static str,
    failed: String,
    from: String,
    to: String,
    database: String,
    took: String,
}

struct BackupRow {
    id: String,
    age: String,
    size: String,
    verified: String,
    pinned: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    app: String,
    host: String,
    generated: String,
    token_query: String,
    alerts: Vec<crate::check::Problem>,
    running: String,
    stable: String,
    stable_tag: String,
    healthy: bool,
    health_detail: String,
    last_release: String,
    unfinished: String,
    backup_count: usize,
    storage: String,
    newest_backup: String,
    kept: Vec<String>,
    timeline: Vec<Row>,
    backups: Vec<BackupRow>,
}

fn short(c: &Option<String>) -> String {
    c.as_deref()
        .map(|s| crate::git::abbrev(s, 12).to_string())
        .unwrap_or_else(|| "-".into())
}

fn build_dashboard(state: &AppState, token: Option<String>) -> anyhow::Result<Dashboard> {
    let loaded = &state.loaded;
    let now = Timestamp::now();
    let status = crate::deploy::status::status(loaded)?;
    let alerts = crate::check::check(loaded)?.problems;
    let unhealthy = alerts.iter().find(|p| p.condition == "stable_unhealthy");
    let listing = crate::backup::catalog::Catalog::new(loaded.backup_dir()).list()?;
    let history = crate::journal::read_history(&loaded.state_dir()).unwrap_or_default();
    let stable_tag = crate::metrics::stable_release(loaded)
        .map(|(_, t)| t)
        .unwrap_or_default();
    let timeline = history
        .iter()
        .rev()
        .take(50)
        .map(|r| Row {
            when: format!(
                "{} ({})",
                r.at.strftime("%Y-%m-%d %H:%M"),
                crate::report::age(r.at, now)
            ),
            what: format!("{} ({})", r.command, r.trigger),
            outcome: r.outcome.as_str().replace('_', " "),
            class: match r.outcome {
                crate::journal::OutcomeKind::Deployed => "ok",
                crate::journal::OutcomeKind::RolledBack => "warn",
                crate::journal::OutcomeKind::Refused => "muted",
                crate::journal::OutcomeKind::RollbackFailed
                | crate::journal::OutcomeKind::Planned
                | crate::journal::OutcomeKind::NothingToDo => "bad",
            },
            failed: short(&r.failed_commit).replace('-', ""),
            from: short(&r.from),
            to: short(&r.to),
            database: match (&r.db_action, &r.db_reason) {
                (Some(a), Some(why)) => format!("{a}: {why}"),
                (Some(a), None) => a.clone(),
                _ => "-".into(),
            },
            took: format!("{:.1}s", r.total_ms as f64 / 1000.0),
        })
        .collect();
    let backups = listing
        .backups
        .iter()
        .map(|m| BackupRow {
            id: m.id.clone(),
            age: crate::report::age(m.created_at, now),
            size: HumanBytes(m.size_bytes).to_string(),
            verified: match (&m.verification, &m.verification_failure) {
                (_, Some(f)) => format!("FAILED {}", crate::report::age(f.at, now)),
                (Some(v), None) => format!("{} {}", v.method, crate::report::age(v.at, now)),
                (None, None) => "no".into(),
            },
            pinned: m.pinned,
        })
        .collect();
    Ok(Dashboard {
        app: loaded
            .app_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        generated: now.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        token_query: token.map(|t| format!("?token={t}")).unwrap_or_default(),
        healthy: unhealthy.is_none(),
        health_detail: unhealthy
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| "probes pass".into()),
        running: short(&status.running_commit),
        stable: short(&status.latest_stable),
        stable_tag,
        last_release: status
            .last_release
            .as_ref()
            .map(|r| {
                format!(
                    "{} {} ({})",
                    r.command,
                    r.outcome.as_str().replace('_', " "),
                    crate::report::age(r.at, now)
                )
            })
            .unwrap_or_else(|| "none recorded".into()),
        unfinished: status
            .unfinished
            .as_ref()
            .map(|j| format!("{} {}: run stablehand recover", j.command, j.id))
            .unwrap_or_default(),
        backup_count: listing.backups.len(),
        storage: HumanBytes(listing.backups.iter().map(|m| m.size_bytes).sum()).to_string(),
        newest_backup: listing
            .backups
            .first()
            .map(|m| format!("{} ({})", m.id, crate::report::age(m.created_at, now)))
            .unwrap_or_else(|| "none".into()),
        kept: status
            .kept_databases
            .iter()
            .map(|d| format!("{} ({}, {})", d.name, d.kind, HumanBytes(d.size_bytes)))
            .collect(),
        alerts,
        timeline,
        backups,
    })
}

async fn dashboard(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.clone();
    let page = blocking(move || build_dashboard(&state, token).and_then(|d| Ok(d.render()?))).await;
    match page {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::redact::redact_text(&format!("{e:#}\n")),
        )
            .into_response(),
    }
}

/// A scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub cron: croner::Cron,
}

fn scheduled_jobs(loaded: &Loaded) -> anyhow::Result<Vec<Job>> {
    let s = &loaded.config.schedule;
    let mut jobs = Vec::new();
    for (name, expr) in [
        ("backup", &s.backup),
        ("verify", &s.verify),
        ("prune", &s.prune),
    ] {
        if let Some(expr) = expr {
            let cron = expr
                .parse::<croner::Cron>()
                .with_context(|| format!("schedule.{name} = {expr:?}"))?;
            jobs.push(Job { name, cron });
        }
    }
    Ok(jobs)
}

/// The next time `job` is due after `after` (UTC).
fn next_due(job: &Job, after: Timestamp) -> Option<Timestamp> {
    let zoned = after.to_zoned(jiff::tz::TimeZone::UTC);
    job.cron
        .find_next_occurrence(&zoned, false)
        .ok()
        .map(|z| z.timestamp())
}

/// Runs the jobs when due, forever (until interrupted). A failing job is logged and
/// announced; the scheduler goes on.
fn run_scheduler(loaded: &Loaded, jobs: Vec<Job>) {
    let mut due: Vec<Option<Timestamp>> =
        jobs.iter().map(|j| next_due(j, Timestamp::now())).collect();
    for (j, d) in jobs.iter().zip(&due) {
        errln!(
            "stablehand serve: {} scheduled, next at {}",
            j.name,
            d.map(|t| t.to_string()).unwrap_or_else(|| "never".into())
        );
    }
    while !crate::process::interrupted() {
        let now = Timestamp::now();
        for (i, job) in jobs.iter().enumerate() {
            if due[i].is_some_and(|t| t <= now) {
                run_job(loaded, job.name);
                due[i] = next_due(job, Timestamp::now());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How long a scheduled job waits for a deploy, rollback, recover or `migrate down` that
/// holds the app lock before it is skipped.
const JOB_WAIT: Duration = Duration::from_secs(30 * 60);

/// How often a waiting job looks at the lock again.
const JOB_RETRY: Duration = Duration::from_secs(1);

/// Whether a scheduled job may run now.
enum Turn {
    /// It may: the app lock, held for the job; and, when it had to wait, for whom.
    Go {
        lock: AppLock,
        waited: Option<String>,
    },
    /// It may not: why.
    Skip(String),
}

/// Takes the app lock for the scheduled job `name`, so that no deploy, rollback or
/// recover runs (or connects to the database) while the job does, and none is running
/// when it starts. A holder, or a command waiting for the lock (`lock::next_in_line`), is
/// waited for up to `limit`, checking every second, and the wait is logged once per
/// holder. An unfinished journal (a deploy cut short; `recover` finishes it) skips the job.
fn take_turn(state_dir: &Path, name: &str, limit: Duration) -> anyhow::Result<Turn> {
    let started = Instant::now();
    let mut blocked_by: Option<Blocker> = None;
    let lock = loop {
        let blocker = match crate::lock::next_in_line(state_dir) {
            Some(next) => Blocker::new(Some(&next), "waiting for the lock"),
            None => match AppLock::try_acquire(state_dir, &format!("serve: scheduled {name}")) {
                Ok(lock) => break lock,
                Err(e) => match e.downcast_ref::<Held>() {
                    Some(held) => Blocker::new(held.by.as_ref(), "running"),
                    None => return Err(e.context("taking the app lock for a scheduled job")),
                },
            },
        };
        if started.elapsed() >= limit {
            return Ok(Turn::Skip(format!(
                "{} is still {} after {} of waiting; the job runs again at its next time",
                blocker.who,
                blocker.doing,
                humantime::format_duration(limit)
            )));
        }
        if blocked_by.as_ref() != Some(&blocker) {
            errln!(
                "stablehand serve: scheduled {name} waiting: {} is {}; the job runs when it has finished (waiting up to {})",
                blocker.who,
                blocker.doing,
                humantime::format_duration(limit)
            );
            blocked_by = Some(blocker);
        }
        let pause = Instant::now();
        while pause.elapsed() < JOB_RETRY {
            if crate::process::interrupted() {
                return Ok(Turn::Skip("serve is stopping".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    Ok(match crate::journal::Journal::load(state_dir) {
        Ok(None) => Turn::Go {
            lock,
            waited: blocked_by.map(|b| {
                format!(
                    "waited {}: {} was {}",
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
                    b.who,
                    b.doing
                )
            }),
        },
        Ok(Some(journal)) => Turn::Skip(crate::journal::unfinished_message(&journal)),
        Err(e) => Turn::Skip(format!("{e:#}")),
    })
}

/// What a scheduled job waits for, as its log names it: "a deploy (pid 4121 on web-1)",
/// "running".
#[derive(PartialEq)]
struct Blocker {
    who: String,
    doing: &'static str,
}

impl Blocker {
    fn new(holder: Option<&Holder>, doing: &'static str) -> Blocker {
        let who = match holder {
            Some(h) if h.command.starts_with(crate::lock::SCHEDULED_JOB_PREFIX) => {
                format!("`{}` (pid {} on {})", h.command, h.pid, h.host)
            }
            Some(h) => format!("a {} (pid {} on {})", h.command, h.pid, h.host),
            None => "a process that has not written its name yet".into(),
        };
        Blocker { who, doing }
    }
}

fn run_job(loaded: &Loaded, name: &str) {
    match take_turn(&loaded.state_dir(), name, JOB_WAIT) {
        Ok(Turn::Go { lock, waited }) => {
            let waited = waited.map(|w| format!(" ({w})")).unwrap_or_default();
            errln!("stablehand serve: running scheduled {name}{waited}");
            let result = run_job_now(loaded, name);
            drop(lock);
            match result {
                Ok(what) => errln!("stablehand serve: scheduled {name} done{waited}: {what}"),
                Err(e) => errln!(
                    "stablehand serve: scheduled {name} FAILED{waited}: {}",
                    crate::redact::redact_text(&format!("{e:#}"))
                ),
            }
        }
        Ok(Turn::Skip(why)) => errln!("stablehand serve: scheduled {name} SKIPPED: {why}"),
        Err(e) => errln!(
            "stablehand serve: scheduled {name} FAILED: {}",
            crate::redact::redact_text(&format!("{e:#}"))
        ),
    }
    crate::metrics::write_textfile(loaded);
}

/// Runs the job `name`; the caller holds the app lock.
fn run_job_now(loaded: &Loaded, name: &str) -> anyhow::Result<String> {
    match name {
        "backup" => crate::backup::create_backup(loaded, "scheduled", false)
            .map(|c| {
                format!(
                    "backup {} ({})",
                    c.backup.id,
                    HumanBytes(c.backup.size_bytes)
                )
            })
            .inspect_err(|e| crate::notify::announce_backup_failure(loaded, e)),
        "verify" => crate::restore::restore_test(loaded, None, false).and_then(|results| {
            let failed = crate::notify::announce_failed_verifications(
                loaded,
                results
                    .iter()
                    .map(|r| (r.id.as_str(), r.ok, r.problem.as_ref())),
            );
            if failed > 0 {
                bail!("{failed} backup(s) failed their restore test")
            }
            Ok(format!(
                "restore test of {} backup(s) passed",
                results.len()
            ))
        }),
        _ => crate::backup::prune(loaded, false)
            .map(|p| format!("pruned {} backup(s)", p.deleted().count())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_due_while_a_deploy_runs_waits_for_it_then_runs_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = AppLock::acquire(dir.path(), "deploy").unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            drop(deploy);
        });
        let started = Instant::now();
        let turn = take_turn(dir.path(), "backup", Duration::from_secs(60)).unwrap();
        releaser.join().unwrap();
        let Turn::Go { lock, waited } = turn else {
            panic!("the job runs once the deploy is done")
        };
        assert!(started.elapsed() >= Duration::from_millis(1500));
        let waited = waited.expect("it says it waited");
        let pid = std::process::id();
        assert!(
            waited.starts_with("waited ") && waited.contains(&format!("a deploy (pid {pid} on ")),
            "{waited}"
        );
        assert!(waited.ends_with("was running"), "{waited}");
        let holder = crate::lock::read_holder(dir.path()).unwrap();
        assert_eq!(holder.command, "serve: scheduled backup");
        drop(lock);
    }

    #[test]
    fn a_job_skips_when_the_deploy_outlasts_the_wait_or_a_journal_is_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let deploy = AppLock::acquire(dir.path(), "rollback").unwrap();
        let turn = take_turn(dir.path(), "verify", Duration::from_millis(500)).unwrap();
        let Turn::Skip(why) = turn else {
            panic!("skipped")
        };
        assert!(why.contains("a rollback (pid "), "{why}");
        assert!(
            why.contains("is still running after 500ms of waiting"),
            "{why}"
        );
        drop(deploy);

        let j = crate::journal::Journal::new("deploy", "abc123");
        j.save(dir.path()).unwrap();
        let Turn::Skip(why) = take_turn(dir.path(), "prune", Duration::from_secs(5)).unwrap()
        else {
            panic!("skipped")
        };
        assert!(why.contains("an unfinished deploy"), "{why}");
        assert!(why.contains("run `stablehand recover`"), "{why}");
        assert!(
            !crate::lock::is_held(dir.path()),
            "a skipped job gives the lock back"
        );
    }

    #[test]
    fn a_job_lets_a_command_waiting_for_the_lock_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let job = AppLock::try_acquire(dir.path(), "serve: scheduled backup").unwrap();
        let state_dir = dir.path().to_path_buf();
        let deployed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = deployed.clone();
        let deploy = std::thread::spawn(move || {
            let lock = AppLock::acquire(&state_dir, "deploy").unwrap();
            std::thread::sleep(Duration::from_millis(1200));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(lock);
        });
        while crate::lock::next_in_line(dir.path()).is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(job);
        let Turn::Go { waited, .. } =
            take_turn(dir.path(), "backup", Duration::from_secs(60)).unwrap()
        else {
            panic!("the next job runs after the deploy")
        };
        assert!(
            deployed.load(std::sync::atomic::Ordering::SeqCst),
            "the deploy went first"
        );
        deploy.join().unwrap();
        assert!(
            waited
                .as_deref()
                .is_some_and(|w| w.contains("a deploy (pid ")),
            "{waited:?}"
        );
    }

    #[test]
    fn next_due_follows_the_cron_expression_in_utc() {
        for (expr, after, due) in [
            ("0 3 * * *", "2026-11-30T01:00:00Z", "2026-11-30T03:00:00Z"),
            (
                "*/5 * * * * *",
                "2026-11-30T01:00:02Z",
                "2026-11-30T01:00:05Z",
            ),
        ] {
            let job = Job {
                name: "backup",
                cron: expr.parse().unwrap(),
            };
            let after: Timestamp = after.parse().unwrap();
            assert_eq!(next_due(&job, after).unwrap().to_string(), due, "{expr}");
        }
    }
}
