//! `stablehand check`: exit 1, saying why, when an alert condition holds: the last
//! successful backup is too old (or there is none), a backup failed its last
//! verification or the newest verification is too old, a deploy is unfinished, or the
//! stable release is unhealthy. Made for cron and monitoring. The decision is a pure
//! function of the facts gathered at the edges.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{AlertsConfig, Loaded};

/// One alert condition that holds, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// no_backup, backup_stale, verification_failed, verification_stale,
    /// unfinished_deploy, stable_unhealthy.
    pub condition: String,
    pub detail: String,
    pub fix: String,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub problems: Vec<Problem>,
}

/// What the decision is made from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub newest_backup: Option<(String, Timestamp)>,
    /// The newest passing verification of any backup.
    pub newest_verified: Option<(String, Timestamp)>,
    /// Backups whose last verification found them damaged: (id, problem).
    pub failed_verifications: Vec<(String, String)>,
    /// The unfinished deploy or rollback, described.
    pub unfinished: Option<String>,
    /// Why the stable release counts as unhealthy, if it does.
    pub unhealthy: Option<String>,
}

fn ago(at: Timestamp, now: Timestamp) -> String {
    let secs = (now.as_second() - at.as_second()).max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The alert conditions that hold.
pub fn evaluate(f: &Facts, alerts: &AlertsConfig, now: Timestamp) -> Vec<Problem> {
    let older_than =
        |at: Timestamp, limit: Duration| now.as_second() - at.as_second() > limit.as_secs() as i64;
    let mut problems = Vec::new();
    let mut add = |condition: &str, detail: String, fix: &str| {
        problems.push(Problem {
            condition: condition.into(),
            detail,
            fix: fix.into(),
        })
    };
    match &f.newest_backup {
        None => add(
            "no_backup",
            "there is no backup".into(),
            "run `stablehand backup` (and schedule it)",
        ),
        Some((id, at)) if older_than(*at, alerts.max_backup_age) => add(
            "backup_stale",
            format!(
                "the newest backup {id} is {} old (alerts.max_backup_age = {})",
                ago(*at, now),
                humantime::format_duration(alerts.max_backup_age)
            ),
            "check the scheduled backup (cron or `serve`), then run `stablehand backup`",
        ),
        Some(_) => {}
    }
    for (id, problem) in &f.failed_verifications {
        add(
            "verification_failed",
            format!("backup {id} failed its last verification: {problem}"),
            "take a new backup; then drop or re-verify the damaged one (`stablehand backup verify ID`)",
        );
    }
    if f.newest_backup.is_some() {
        match &f.newest_verified {
            None => add(
                "verification_stale",
                "no backup has passed a verification".into(),
                "run `stablehand backup verify --latest` (or --restore-test)",
            ),
            Some((id, at)) if older_than(*at, alerts.max_verify_age) => add(
                "verification_stale",
                format!(
                    "the newest verification ({id}) is {} old (alerts.max_verify_age = {})",
                    ago(*at, now),
                    humantime::format_duration(alerts.max_verify_age)
                ),
                "run `stablehand backup verify --latest --restore-test` (and schedule it)",
            ),
            Some(_) => {}
        }
    }
    if let Some(u) = &f.unfinished {
        add("unfinished_deploy", u.clone(), "run `stablehand recover`");
    }
    if let Some(why) = &f.unhealthy {
        add(
            "stable_unhealthy",
            why.clone(),
            "run `stablehand status` and `stablehand health`; then deploy a fix or roll back by hand",
        );
    }
    problems
}

/// Gathers the facts (backups, journal, history, one round of HTTP probes) and decides.
pub fn check(loaded: &Loaded) -> anyhow::Result<Report> {
    let listing = crate::backup::catalog::Catalog::new(loaded.backup_dir()).list()?;
    let mut facts = Facts {
        newest_backup: listing
            .backups
            .first()
            .map(|m| (m.id.clone(), m.created_at)),
        ..Default::default()
    };
    for m in &listing.backups {
        if let Some(v) = &m.verification {
            if facts
                .newest_verified
                .as_ref()
                .is_none_or(|(_, at)| v.at > *at)
            {
                facts.newest_verified = Some((m.id.clone(), v.at));
            }
        }
        if let Some(fail) = &m.verification_failure {
            facts
                .failed_verifications
                .push((m.id.clone(), fail.problem.clone()));
        }
    }
    let state_dir = loaded.state_dir();
    if let Some(j) = crate::journal::Journal::load(&state_dir)? {
        facts.unfinished = Some(format!(
            "an unfinished {} ({}) started {}",
            j.command, j.id, j.started_at
        ));
    }
    let history = crate::journal::read_history(&state_dir).unwrap_or_default();
    if let Some(last) = history
        .last()
        .filter(|r| r.outcome == crate::journal::OutcomeKind::RollbackFailed)
    {
        facts.unhealthy = Some(format!(
            "the last {} ended in manual intervention: {}",
            last.command, last.message
        ));
    } else {
        let failing: Vec<String> = loaded
            .config
            .health
            .http
            .iter()
            .map(crate::health::probe_http)
            .filter_map(|p| p.problem())
            .collect();
        if !failing.is_empty() {
            facts.unhealthy = Some(format!("the health probes fail: {}", failing.join("; ")));
        }
    }
    let problems = evaluate(&facts, &loaded.config.alerts, Timestamp::now());
    Ok(Report {
        ok: problems.is_empty(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> AlertsConfig {
        AlertsConfig {
            max_backup_age: Duration::from_secs(26 * 3600),
            max_verify_age: Duration::from_secs(8 * 86400),
            ..Default::default()
        }
    }

    fn at(hours_ago: i64, now: Timestamp) -> Timestamp {
        Timestamp::from_second(now.as_second() - hours_ago * 3600).unwrap()
    }

    #[test]
    fn each_condition_alone() {
        let now = Timestamp::now();
        let healthy = Facts {
            newest_backup: Some(("b1".into(), at(1, now))),
            newest_verified: Some(("b1".into(), at(1, now))),
            ..Default::default()
        };
        assert!(evaluate(&healthy, &alerts(), now).is_empty());
        let conditions = |f: Facts| -> Vec<String> {
            evaluate(&f, &alerts(), now)
                .into_iter()
                .map(|p| p.condition)
                .collect()
        };
        assert_eq!(conditions(Facts::default()), ["no_backup"]);
        assert_eq!(
            conditions(Facts {
                newest_backup: Some(("b1".into(), at(27, now))),
                ..healthy.clone()
            }),
            ["backup_stale"]
        );
        assert_eq!(
            conditions(Facts {
                failed_verifications: vec![("b0".into(), "sha256 mismatch".into())],
                ..healthy.clone()
            }),
            ["verification_failed"]
        );
        assert_eq!(
            conditions(Facts {
                newest_verified: Some(("b1".into(), at(9 * 24, now))),
                ..healthy.clone()
            }),
            ["verification_stale"]
        );
        assert_eq!(
            conditions(Facts {
                unfinished: Some("deploy".into()),
                ..healthy.clone()
            }),
            ["unfinished_deploy"]
        );
        assert_eq!(
            conditions(Facts {
                unhealthy: Some("HTTP 500".into()),
                ..healthy
            }),
            ["stable_unhealthy"]
        );
    }
}
