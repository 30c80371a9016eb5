//! The health gate's decision, as a pure state machine over observations: it passes
//! only after `consecutive` successful rounds followed by a `stable_for` window with no
//! failed probe and no container restart; it fails at `timeout`, or at once on a restart
//! (a crash loop passes a one-shot "Up" check; it does not pass this). The probes and
//! container reads that produce observations live with the runtime (issue 5).

use std::time::Duration;

use serde::Serialize;

/// The gate's settings (`[health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// Successful rounds in a row before the stability window starts.
    pub consecutive: u32,
    /// How long everything must stay healthy after that.
    pub stable_for: Duration,
    /// The gate fails when it has not passed by then.
    pub timeout: Duration,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            consecutive: 3,
            stable_for: Duration::from_secs(20),
            timeout: Duration::from_secs(120),
        }
    }
}

/// One round of checks, taken `at` after the gate started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub at: Duration,
    /// Every probe answered as expected and every container is running (and healthy
    /// where it has a healthcheck).
    pub all_ok: bool,
    /// Container restarts since the gate started, summed over the watched services.
    pub restarts: u32,
    /// What failed in this round, for the verdict.
    pub problems: Vec<String>,
}

/// Where the gate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Decision {
    /// Keep probing.
    Pending {
        consecutive_ok: u32,
        window_started: Option<u64>,
    },
    Pass,
    Fail {
        reason: String,
    },
}

/// The gate's running state.
#[derive(Debug, Clone)]
pub struct Gate {
    policy: GatePolicy,
    consecutive_ok: u32,
    window_start: Option<Duration>,
    restarts_at_start: Option<u32>,
    last_problems: Vec<String>,
    done: Option<Decision>,
}

impl Gate {
    pub fn new(policy: GatePolicy) -> Gate {
        Gate {
            policy,
            consecutive_ok: 0,
            window_start: None,
            restarts_at_start: None,
            last_problems: Vec::new(),
            done: None,
        }
    }

    /// Feeds one round; returns the decision after it. Once passed or failed, the
    /// decision no longer changes.
    pub fn observe(&mut self, round: &Round) -> Decision {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let baseline = *self.restarts_at_start.get_or_insert(round.restarts);
        let decision = if round.restarts > baseline {
            Decision::Fail {
                reason: format!(
                    "a container restarted {} time(s) while the gate was watching (a crash loop passes a one-shot check, not this one)",
                    round.restarts - baseline
                ),
            }
        } else if !round.all_ok && self.window_start.is_some() {
            Decision::Fail {
                reason: format!(
                    "a check failed inside the {} stability window: {}",
                    humantime::format_duration(self.policy.stable_for),
                    describe(&round.problems)
                ),
            }
        } else {
            if round.all_ok {
                self.consecutive_ok += 1;
            } else {
                self.consecutive_ok = 0;
                self.last_problems = round.problems.clone();
            }
            if self.window_start.is_none() && self.consecutive_ok >= self.policy.consecutive.max(1)
            {
                self.window_start = Some(round.at);
            }
            match self.window_start {
                Some(start) if round.at.saturating_sub(start) >= self.policy.stable_for => {
                    Decision::Pass
                }
                _ if round.at >= self.policy.timeout => Decision::Fail {
                    reason: match self.window_start {
                        Some(_) => format!(
                            "the gate timed out after {} inside the stability window",
                            humantime::format_duration(self.policy.timeout)
                        ),
                        None => format!(
                            "no {} successful checks in a row within {}; last problem: {}",
                            self.policy.consecutive,
                            humantime::format_duration(self.policy.timeout),
                            describe(&self.last_problems)
                        ),
                    },
                },
                _ => Decision::Pending {
                    consecutive_ok: self.consecutive_ok,
                    window_started: self.window_start.map(|d| d.as_millis() as u64),
                },
            }
        };
        if !matches!(decision, Decision::Pending { .. }) {
            self.done = Some(decision.clone());
        }
        decision
    }
}

fn describe(problems: &[String]) -> String {
    if problems.is_empty() {
        "none recorded".into()
    } else {
        problems.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ok(at: u64) -> Round {
        Round {
            at: secs(at),
            all_ok: true,
            restarts: 0,
            problems: vec![],
        }
    }

    fn bad(at: u64, why: &str) -> Round {
        Round {
            at: secs(at),
            all_ok: false,
            restarts: 0,
            problems: vec![why.into()],
        }
    }

    /// Runs rounds every 2 s until a decision or the list ends.
    fn run(policy: GatePolicy, rounds: &[Round]) -> Decision {
        let mut gate = Gate::new(policy);
        let mut last = Decision::Pending {
            consecutive_ok: 0,
            window_started: None,
        };
        for r in rounds {
            last = gate.observe(r);
            if !matches!(last, Decision::Pending { .. }) {
                break;
            }
        }
        last
    }

    fn policy() -> GatePolicy {
        GatePolicy {
            consecutive: 3,
            stable_for: secs(10),
            timeout: secs(60),
        }
    }

    #[test]
    fn healthy_app_passes_after_consecutive_then_the_window() {
        let rounds: Vec<Round> = (0..=30).map(|i| ok(i * 2)).collect();
        let mut gate = Gate::new(policy());
        let mut passed_at = None;
        for r in &rounds {
            if gate.observe(r) == Decision::Pass {
                passed_at = Some(r.at);
                break;
            }
        }
        // 3 successes at 0, 2, 4 s: the window starts at 4 s and holds until 14 s.
        assert_eq!(passed_at, Some(secs(14)));
    }

    #[test]
    fn a_single_success_is_not_enough() {
        let mut rounds = vec![ok(0)];
        rounds.extend((1..40).map(|i| bad(i * 2, "HTTP 500")));
        let d = run(policy(), &rounds);
        assert!(
            matches!(&d, Decision::Fail { reason } if reason.contains("HTTP 500") && reason.contains("no 3 successful")),
            "{d:?}"
        );
    }

    #[test]
    fn crash_loop_fails_on_the_first_restart_inside_the_window() {
        // 200 for a while (a one-shot check passes), then the container restarts.
        let mut rounds: Vec<Round> = (0..4).map(|i| ok(i * 2)).collect();
        rounds.push(Round {
            at: secs(8),
            all_ok: true,
            restarts: 1,
            problems: vec![],
        });
        let d = run(policy(), &rounds);
        assert!(
            matches!(&d, Decision::Fail { reason } if reason.contains("restarted 1 time")),
            "{d:?}"
        );
    }

    #[test]
    fn restarts_before_the_gate_started_do_not_count() {
        let rounds: Vec<Round> = (0..=10)
            .map(|i| Round {
                at: secs(i * 2),
                all_ok: true,
                restarts: 4,
                problems: vec![],
            })
            .collect();
        assert_eq!(run(policy(), &rounds), Decision::Pass);
    }

    #[test]
    fn a_failed_check_inside_the_window_fails_but_before_it_resets() {
        let rounds = vec![
            ok(0),
            ok(2),
            bad(4, "timeout"),
            ok(6),
            ok(8),
            ok(10),
            bad(12, "HTTP 502"),
        ];
        let d = run(policy(), &rounds);
        assert!(
            matches!(&d, Decision::Fail { reason } if reason.contains("stability window") && reason.contains("HTTP 502")),
            "{d:?}"
        );
        // Without the late failure it passes: the window started at 10 s.
        let rounds: Vec<Round> = vec![ok(0), ok(2), bad(4, "timeout")]
            .into_iter()
            .chain((3..=10).map(|i| ok(i * 2)))
            .collect();
        assert_eq!(run(policy(), &rounds), Decision::Pass);
    }

    #[test]
    fn never_healthy_times_out_naming_the_last_problem() {
        let rounds: Vec<Round> = (0..=31).map(|i| bad(i * 2, "connection refused")).collect();
        let d = run(policy(), &rounds);
        assert!(
            matches!(&d, Decision::Fail { reason } if reason.contains("within 1m") && reason.contains("connection refused")),
            "{d:?}"
        );
    }

    #[test]
    fn decisions_are_final() {
        let mut gate = Gate::new(policy());
        gate.observe(&Round {
            at: secs(0),
            all_ok: true,
            restarts: 0,
            problems: vec![],
        });
        let fail = gate.observe(&Round {
            at: secs(2),
            all_ok: true,
            restarts: 1,
            problems: vec![],
        });
        assert!(matches!(fail, Decision::Fail { .. }));
        assert_eq!(gate.observe(&ok(4)), fail);
    }

    proptest! {
        /// Whatever happens, the gate never passes before consecutive successes plus the
        /// window, never passes after a restart, and always decides by the timeout.
        #[test]
        fn gate_invariants(outcomes in prop::collection::vec((any::<bool>(), 0u32..2), 1..80)) {
            let p = policy();
            let mut gate = Gate::new(p);
            let mut count = 0;
            let mut baseline = None;
            let mut decided = None;
            for (i, (all_ok, restart)) in outcomes.iter().enumerate() {
                let at = secs(i as u64 * 2);
                count += restart;
                let first = *baseline.get_or_insert(count);
                let restarted = count > first;
                let d = gate.observe(&Round { at, all_ok: *all_ok, restarts: count, problems: vec![] });
                match d {
                    Decision::Pass => {
                        prop_assert!(!restarted);
                        prop_assert!(at >= secs(2 * (p.consecutive as u64 - 1)) + p.stable_for);
                        decided = Some(at);
                        break;
                    }
                    Decision::Fail { .. } => { decided = Some(at); break; }
                    Decision::Pending { .. } => prop_assert!(at < p.timeout),
                }
            }
            if outcomes.len() as u64 * 2 > p.timeout.as_secs() + 2 {
                prop_assert!(decided.is_some());
            }
        }
    }
}
