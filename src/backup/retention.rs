//! Retention as a pure function of (backups, policy, now): which backups stay, and why.
//! Rules combine by union; pinned backups and the newest verified backup always stay;
//! a policy that keeps nothing is refused.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use jiff::civil::Date;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::BackupConfig;

/// How many backups to keep, by rule. Zero turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_within: Duration,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl Policy {
    pub fn from_config(c: &BackupConfig) -> Policy {
        Policy {
            keep_last: c.keep_last,
            keep_within: c.keep_within,
            keep_daily: c.keep_daily,
            keep_weekly: c.keep_weekly,
            keep_monthly: c.keep_monthly,
        }
    }

    /// True when no rule keeps anything.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_within.is_zero()
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
    }
}

/// What retention needs to know of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub created_at: Timestamp,
    pub pinned: bool,
    pub verified: bool,
    /// The backup recorded with the release `latest-stable` points at.
    pub of_stable_release: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule", content = "detail")]
pub enum Reason {
    Pinned,
    StableRelease,
    NewestVerified,
    Newest,
    Last(u32),
    Within(String),
    Daily(String),
    Weekly(String),
    Monthly(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Pinned => write!(f, "pinned"),
            Reason::StableRelease => write!(f, "backup of latest-stable"),
            Reason::NewestVerified => write!(f, "newest verified"),
            Reason::Newest => write!(f, "newest (none verified)"),
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Within(d) => write!(f, "within {d}"),
            Reason::Daily(d) => write!(f, "daily {d}"),
            Reason::Weekly(w) => write!(f, "weekly {w}"),
            Reason::Monthly(m) => write!(f, "monthly {m}"),
        }
    }
}

/// The decision for one backup: kept for these reasons, or deleted when there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub id: String,
    pub keep: Vec<Reason>,
}

impl Verdict {
    pub fn deleted(&self) -> bool {
        self.keep.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the retention policy keeps nothing; refusing to delete every backup")]
pub struct EmptyPolicy;

/// Decides, for every backup, whether it stays and why. Output is newest first.
pub fn plan(
    backups: &[Candidate],
    policy: &Policy,
    now: Timestamp,
) -> Result<Vec<Verdict>, EmptyPolicy> {
    if policy.is_empty() {
        return Err(EmptyPolicy);
    }
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    // Newest first by manifest time; the id breaks ties so the order is total.
    sorted.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });

    // The newest verified backup always stays; with none verified, the newest does.
    let newest_verified = sorted.iter().find(|c| c.verified).map(|c| c.id.clone());
    let newest_fallback = match newest_verified {
        None => sorted.first().map(|c| c.id.clone()),
        Some(_) => None,
    };
    let within_label = humantime::format_duration(policy.keep_within).to_string();
    let cutoff = now
        .checked_sub(
            jiff::SignedDuration::try_from(policy.keep_within).unwrap_or(jiff::SignedDuration::MAX),
        )
        .unwrap_or(Timestamp::MIN);

    let mut buckets = [
        Bucketer::new(policy.keep_daily, |d| d.to_string(), Reason::Daily),
        Bucketer::new(policy.keep_weekly, week_label, Reason::Weekly),
        Bucketer::new(
            policy.keep_monthly,
            |d| d.strftime("%Y-%m").to_string(),
            Reason::Monthly,
        ),
    ];

    let mut out = Vec::with_capacity(sorted.len());
    for (i, c) in sorted.iter().enumerate() {
        let mut keep = Vec::new();
        if c.pinned {
            keep.push(Reason::Pinned);
        }
        if c.of_stable_release {
            keep.push(Reason::StableRelease);
        }
        if newest_verified.as_deref() == Some(c.id.as_str()) {
            keep.push(Reason::NewestVerified);
        }
        if newest_fallback.as_deref() == Some(c.id.as_str()) {
            keep.push(Reason::Newest);
        }
        if (i as u64) < policy.keep_last as u64 {
            keep.push(Reason::Last(policy.keep_last));
        }
        if !policy.keep_within.is_zero() && c.created_at >= cutoff {
            keep.push(Reason::Within(within_label.clone()));
        }
        let date = c.created_at.to_zoned(jiff::tz::TimeZone::UTC).date();
        for b in buckets.iter_mut() {
            if let Some(r) = b.offer(date) {
                keep.push(r);
            }
        }
        out.push(Verdict {
            id: c.id.clone(),
            keep,
        });
    }
    Ok(out)
}

/// Keeps the newest backup of each of the last `limit` periods that have backups.
struct Bucketer {
    limit: u32,
    seen: HashSet<String>,
    label: fn(Date) -> String,
    reason: fn(String) -> Reason,
}

impl Bucketer {
    fn new(limit: u32, label: fn(Date) -> String, reason: fn(String) -> Reason) -> Self {
        Bucketer {
            limit,
            seen: HashSet::new(),
            label,
            reason,
        }
    }

    /// Called newest first: the first backup of a new period is kept while room remains.
    fn offer(&mut self, date: Date) -> Option<Reason> {
        if self.limit == 0 || self.seen.len() as u64 >= self.limit as u64 {
            return None;
        }
        let key = (self.label)(date);
        if self.seen.insert(key.clone()) {
            Some((self.reason)(key))
        } else {
            None
        }
    }
}

fn week_label(d: Date) -> String {
    let w = d.iso_week_date();
    format!("{}-W{:02}", w.year(), w.week())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::ToSpan;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cand(id: &str, at: &str) -> Candidate {
        Candidate {
            id: id.into(),
            created_at: ts(at),
            pinned: false,
            verified: true,
            of_stable_release: false,
        }
    }

    fn kept(verdicts: &[Verdict]) -> Vec<String> {
        verdicts
            .iter()
            .filter(|v| !v.deleted())
            .map(|v| v.id.clone())
            .collect()
    }

    #[test]
    fn union_of_last_and_within() {
        let now = ts("2026-06-30T12:00:00Z");
        let backups: Vec<_> = (1..=20)
            .map(|d| cand(&format!("b{d:02}"), &format!("2026-06-{d:02}T03:00:00Z")))
            .collect();
        let policy = Policy {
            keep_last: 3,
            keep_within: Duration::from_secs(15 * 86400),
            ..Policy::default()
        };
        let v = plan(&backups, &policy, now).unwrap();
        // within 15 days of June 30 12:00: June 15 12:00 onwards -> b16..b20; last 3 are inside.
        assert_eq!(kept(&v), vec!["b20", "b19", "b18", "b17", "b16"]);
    }

    #[test]
    fn quiet_month_does_not_delete_everything() {
        // The proposal's `find -mtime +30 -delete` removes all of these; keep_last saves 10.
        let now = ts("2026-12-31T00:00:00Z");
        let backups: Vec<_> = (1..=12)
            .map(|d| cand(&format!("b{d:02}"), &format!("2026-01-{d:02}T00:00:00Z")))
            .collect();
        let v = plan(
            &backups,
            &Policy {
                keep_last: 10,
                keep_within: Duration::from_secs(30 * 86400),
                ..Policy::default()
            },
            now,
        )
        .unwrap();
        assert_eq!(kept(&v).len(), 10);
    }

    #[test]
    fn order_comes_from_manifest_time_not_id() {
        let now = ts("2026-06-30T00:00:00Z");
        let backups = vec![
            cand("zzz_old", "2026-01-01T00:00:00Z"),
            cand("aaa_new", "2026-06-01T00:00:00Z"),
        ];
        let v = plan(
            &backups,
            &Policy {
                keep_last: 1,
                ..Policy::default()
            },
            now,
        )
        .unwrap();
        assert_eq!(kept(&v), vec!["aaa_new"]);
    }

    #[test]
    fn daily_weekly_monthly_keep_newest_per_period() {
        let now = ts("2026-03-31T00:00:00Z");
        let backups = vec![
            cand("mar30-b", "2026-03-30T20:00:00Z"),
            cand("mar30-a", "2026-03-30T08:00:00Z"),
            cand("mar29", "2026-03-29T08:00:00Z"),
            cand("feb10", "2026-02-10T08:00:00Z"),
            cand("jan05", "2026-01-05T08:00:00Z"),
        ];
        let v = plan(
            &backups,
            &Policy {
                keep_daily: 2,
                keep_monthly: 2,
                ..Policy::default()
            },
            now,
        )
        .unwrap();
        assert_eq!(kept(&v), vec!["mar30-b", "mar29", "feb10"]);
        assert_eq!(
            v[0].keep,
            vec![
                Reason::NewestVerified,
                Reason::Daily("2026-03-30".into()),
                Reason::Monthly("2026-03".into())
            ]
        );
    }

    #[test]
    fn pinned_and_newest_verified_survive_everything() {
        let now = ts("2026-06-30T00:00:00Z");
        let mut backups = vec![
            cand("new-unverified", "2026-06-29T00:00:00Z"),
            cand("old-verified", "2026-01-01T00:00:00Z"),
            cand("old-pinned", "2025-01-01T00:00:00Z"),
        ];
        backups[0].verified = false;
        backups[2].pinned = true;
        let v = plan(
            &backups,
            &Policy {
                keep_last: 1,
                ..Policy::default()
            },
            now,
        )
        .unwrap();
        assert_eq!(
            kept(&v),
            vec!["new-unverified", "old-verified", "old-pinned"]
        );
        assert_eq!(v[1].keep, vec![Reason::NewestVerified]);
        assert_eq!(v[2].keep, vec![Reason::Pinned]);
    }

    #[test]
    fn empty_policy_is_refused() {
        assert_eq!(
            plan(&[], &Policy::default(), Timestamp::UNIX_EPOCH),
            Err(EmptyPolicy)
        );
    }

    fn arb_backups() -> impl Strategy<Value = Vec<Candidate>> {
        (
            prop::collection::vec((0i64..400 * 24, any::<bool>(), any::<bool>()), 0..40),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(v, stable)| {
                let now = ts("2026-06-30T00:00:00Z");
                let n = v.len();
                v.into_iter()
                    .enumerate()
                    .map(|(i, (hours_ago, pinned, verified))| Candidate {
                        id: format!("b{i:03}"),
                        created_at: now.checked_sub(hours_ago.hours()).unwrap(),
                        pinned,
                        verified,
                        of_stable_release: n > 0 && i == stable.index(n),
                    })
                    .collect()
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (0u32..6, 0u64..60, 0u32..5, 0u32..5, 0u32..5)
            .prop_map(|(l, w, d, wk, m)| Policy {
                keep_last: l,
                keep_within: Duration::from_secs(w * 86400),
                keep_daily: d,
                keep_weekly: wk,
                keep_monthly: m,
            })
            .prop_filter("non-empty", |p| !p.is_empty())
    }

    proptest! {
        #[test]
        fn pinned_and_newest_verified_always_survive(backups in arb_backups(), policy in arb_policy()) {
            let now = ts("2026-06-30T00:00:00Z");
            let v = plan(&backups, &policy, now).unwrap();
            let survivors: HashSet<String> = kept(&v).into_iter().collect();
            for b in backups.iter().filter(|b| b.pinned || b.of_stable_release) {
                prop_assert!(survivors.contains(&b.id));
            }
            let newest_verified = backups.iter().filter(|b| b.verified)
                .max_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
            if let Some(nv) = newest_verified {
                prop_assert!(survivors.contains(&nv.id));
            }
            if !backups.is_empty() {
                prop_assert!(!survivors.is_empty());
            }
        }

        #[test]
        fn applying_twice_deletes_nothing_more(backups in arb_backups(), policy in arb_policy()) {
            let now = ts("2026-06-30T00:00:00Z");
            let first = plan(&backups, &policy, now).unwrap();
            let survivors: HashSet<String> = kept(&first).into_iter().collect();
            let remaining: Vec<Candidate> = backups.into_iter().filter(|b| survivors.contains(&b.id)).collect();
            let second = plan(&remaining, &policy, now).unwrap();
            prop_assert!(second.iter().all(|v| !v.deleted()));
        }

        #[test]
        fn every_backup_gets_one_verdict(backups in arb_backups(), policy in arb_policy()) {
            let v = plan(&backups, &policy, ts("2026-06-30T00:00:00Z")).unwrap();
            prop_assert_eq!(v.len(), backups.len());
        }
    }
}
