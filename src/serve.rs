//! `stablehand serve`: a long-running process that runs the `[schedule]` jobs (backups,
//! restore tests, pruning) and serves a dashboard (server-rendered HTML, no JavaScript),
//! `/metrics` and `/api/status`. It binds to loopback by default; any other address
//! needs a token (`serve.token_env`), checked on every request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use indicatif::HumanBytes;
use jiff::Timestamp;

use crate::config::Loaded;

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
        eprintln!("stablehand serve: listening on http://{bound}");
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
    let history = crate::deploy::journal::read_history(&loaded.state_dir()).unwrap_or_default();
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
            outcome: r.outcome.replace('_', " "),
            class: match r.outcome.as_str() {
                "deployed" => "ok",
                "rolled_back" => "warn",
                "refused" => "muted",
                _ => "bad",
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
                    r.outcome.replace('_', " "),
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
        eprintln!(
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

fn run_job(loaded: &Loaded, name: &str) {
    eprintln!("stablehand serve: running scheduled {name}");
    let result: anyhow::Result<String> = match name {
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
    };
    match result {
        Ok(what) => eprintln!("stablehand serve: scheduled {name} done: {what}"),
        Err(e) => eprintln!(
            "stablehand serve: scheduled {name} FAILED: {}",
            crate::redact::redact_text(&format!("{e:#}"))
        ),
    }
    crate::metrics::write_textfile(loaded);
}

#[cfg(test)]
mod tests {
    use super::*;

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
