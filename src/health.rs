//! The health gate's decision, as a pure state machine over observations: it passes
//! only after `consecutive` successful rounds followed by a `stable_for` window with no
//! failed probe and no container restart; it fails at `timeout`, or at once on a restart
//! (a crash loop passes a one-shot "Up" check; it does not pass this). `run_gate` feeds
//! it with HTTP probes and container states read from Compose.

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

/// The last result of one HTTP probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// The URL, password redacted.
    pub url: String,
    pub ok: bool,
    pub status: Option<u16>,
    /// What went wrong, or "HTTP 200".
    pub detail: String,
    pub millis: u64,
}

impl ProbeResult {
    /// "url: what went wrong", when the probe failed.
    pub fn problem(&self) -> Option<String> {
        (!self.ok).then(|| format!("{}: {}", self.url, self.detail))
    }
}

/// Runs one HTTP probe: no redirects followed (a 3xx counts as an answer), the body
/// read up to 1 MiB when a substring is expected.
pub fn probe_http(p: &crate::config::HttpProbeConfig) -> ProbeResult {
    let started = std::time::Instant::now();
    let shown = crate::redact::redact_text(&p.url);
    let agent = ureq::AgentBuilder::new()
        .timeout(p.timeout)
        .redirects(0)
        .build();
    let response = match agent.get(&p.url).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            // Kind, message and cause, without the URL (the result names it already).
            let mut detail = t.kind().to_string();
            if let Some(m) = t.message() {
                detail.push_str(&format!(": {m}"));
            }
            if let Some(cause) = std::error::Error::source(&t) {
                detail.push_str(&format!(": {cause}"));
            }
            return ProbeResult {
                url: shown,
                ok: false,
                status: None,
                detail: crate::redact::redact_text(&detail),
                millis: started.elapsed().as_millis() as u64,
            };
        }
    };
    let status = response.status();
    let status_ok = match p.expect_status {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    let mut detail = format!("HTTP {status}");
    let mut ok = status_ok;
    if !status_ok {
        detail.push_str(&match p.expect_status {
            Some(want) => format!(" (expected {want})"),
            None => " (expected 200-399)".to_string(),
        });
    }
    if ok && (p.contains.is_some() || p.matches.is_some()) {
        let mut body = String::new();
        let read = std::io::Read::read_to_string(
            &mut std::io::Read::take(response.into_reader(), 1 << 20),
            &mut body,
        );
        if let Err(e) = read {
            ok = false;
            detail.push_str(&format!(", body unreadable: {e}"));
        } else if let Some(needle) = p.contains.as_deref().filter(|n| !body.contains(n)) {
            ok = false;
            detail.push_str(&format!(", body does not contain {needle:?}"));
        } else if let Some(pattern) = &p.matches {
            // Validated when the config was loaded.
            let matched = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(&body));
            if !matched {
                ok = false;
                detail.push_str(&format!(", body does not match /{pattern}/"));
            }
        }
    }
    ProbeResult {
        url: shown,
        ok,
        status: Some(status),
        detail,
        millis: started.elapsed().as_millis() as u64,
    }
}

/// What the gate decided, with everything needed to see why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub reason: Option<String>,
    pub took_ms: u64,
    pub rounds: u32,
    pub probes: Vec<ProbeResult>,
    pub containers: Vec<crate::runtime::compose::ContainerState>,
    /// The last 30 log lines of each unhealthy service.
    pub logs: std::collections::BTreeMap<String, String>,
}

/// A gate with no probe and no container cannot pass: a config error, found before a
/// deploy changes anything.
pub fn ensure_something_to_check(loaded: &crate::config::Loaded) -> anyhow::Result<()> {
    let h = &loaded.config.health;
    if h.http.is_empty() && h.containers.is_empty() {
        return Err(crate::config::ConfigError::Invalid {
            path: loaded.path.clone(),
            location: String::new(),
            key: "health".into(),
            message: "the health gate has nothing to check: add [[health.http]] probes (url = \"http://127.0.0.1:3000/health\") or health.containers".into(),
        }
        .into());
    }
    Ok(())
}

/// Runs the gate of `[health]` until it passes or fails. `on_round` sees each round
/// and the decision after it (for progress output).
pub fn run_gate(
    loaded: &crate::config::Loaded,
    on_round: impl FnMut(&Round, &Decision),
) -> anyhow::Result<Verdict> {
    ensure_something_to_check(loaded)?;
    let h = &loaded.config.health;
    run_gate_on(h, main_compose(loaded, h)?.as_ref(), on_round, false)
}

/// The main project's Compose, which the containers check of `h` looks through; None
/// when `h` checks no container.
pub fn main_compose(
    loaded: &crate::config::Loaded,
    h: &crate::config::HealthConfig,
) -> anyhow::Result<Option<crate::runtime::compose::Compose>> {
    match h.containers.is_empty() {
        true => Ok(None),
        false => crate::runtime::compose::Compose::detect(&loaded.app_dir, &loaded.config.runtime)
            .map(Some),
    }
}

/// The gate of `h` with its containers looked up through `compose` (the main project,
/// or the new release's own while it runs beside the old one).
pub fn run_gate_on(
    h: &crate::config::HealthConfig,
    compose: Option<&crate::runtime::compose::Compose>,
    mut on_round: impl FnMut(&Round, &Decision),
    on_deferred_interrupt: bool,
) -> anyhow::Result<Verdict> {
    let compose = compose.filter(|_| !h.containers.is_empty());
    let policy = GatePolicy {
        consecutive: h.consecutive,
        stable_for: h.stable_for,
        timeout: h.timeout,
    };
    let mut gate = Gate::new(policy);
    let started = std::time::Instant::now();
    let mut rounds = 0;
    let mut restarts = Restarts::default();
    let mut restarted_services = std::collections::BTreeSet::new();
    loop {
        if crate::process::interrupted()
            || (on_deferred_interrupt && crate::process::deferred_interrupt())
        {
            anyhow::bail!("interrupted while the health gate was running");
        }
        let at = started.elapsed();
        let probes: Vec<ProbeResult> = h.http.iter().map(probe_http).collect();
        let mut problems: Vec<String> = probes.iter().filter_map(ProbeResult::problem).collect();
        let look = match &compose {
            Some(c) => restarts.look(c, &h.containers),
            None => ContainerLook::default(),
        };
        restarted_services.extend(look.restarted);
        problems.extend(look.problems);
        let containers = look.containers;
        let round = Round {
            at,
            all_ok: problems.is_empty(),
            restarts: look.restarts,
            problems,
        };
        rounds += 1;
        let decision = gate.observe(&round);
        on_round(&round, &decision);
        if !matches!(decision, Decision::Pending { .. }) {
            let mut logs = std::collections::BTreeMap::new();
            if let (Decision::Fail { .. }, Some(c)) = (&decision, compose) {
                for state in &containers {
                    let restarted = restarted_services.contains(&state.service);
                    if (!state.is_ok() || restarted) && !logs.contains_key(&state.service) {
                        if let Ok(tail) = c.logs_tail(&state.service, 30) {
                            logs.insert(state.service.clone(), tail);
                        }
                    }
                }
            }
            return Ok(Verdict {
                passed: decision == Decision::Pass,
                reason: match decision {
                    Decision::Fail { reason } => Some(reason),
                    _ => None,
                },
                took_ms: started.elapsed().as_millis() as u64,
                rounds,
                probes,
                containers,
                logs,
            });
        }
        std::thread::sleep(h.interval);
    }
}

/// What is wrong with a container the gate or the watch checks, if anything.
fn container_problem(c: &crate::runtime::compose::ContainerState) -> Option<String> {
    (!c.is_ok()).then(|| {
        format!(
            "service {}: {}{}",
            c.service,
            c.status,
            c.health
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        )
    })
}

/// Container restarts since the first look: restart counts per container id then; a
/// container that appears or disappears later (recreated, removed) counts as a restart.
#[derive(Default)]
pub struct Restarts {
    first: Option<std::collections::BTreeMap<String, u32>>,
}

/// One look at the containers of the gate or the watch.
#[derive(Default)]
pub struct ContainerLook {
    pub containers: Vec<crate::runtime::compose::ContainerState>,
    /// Restart events since the first look.
    pub restarts: u32,
    /// The services they happened to.
    pub restarted: std::collections::BTreeSet<String>,
    /// What is wrong with them now (stopped, unhealthy), or that they could not be read.
    pub problems: Vec<String>,
}

impl Restarts {
    /// Reads the containers of `services` through `compose`. A Docker hiccup is a
    /// failed round, not the end of the gate or the watch: it counts no restart.
    pub fn look(
        &mut self,
        compose: &crate::runtime::compose::Compose,
        services: &[String],
    ) -> ContainerLook {
        match compose.container_states(services) {
            Ok(containers) => {
                let (restarts, restarted) = self.since_first(&containers);
                let problems = containers.iter().filter_map(container_problem).collect();
                ContainerLook {
                    containers,
                    restarts,
                    restarted,
                    problems,
                }
            }
            Err(e) => ContainerLook {
                problems: vec![format!("reading the containers failed: {e:#}")],
                ..ContainerLook::default()
            },
        }
    }

    /// Restart events since the first call, and the services they happened to.
    pub fn since_first(
        &mut self,
        containers: &[crate::runtime::compose::ContainerState],
    ) -> (u32, std::collections::BTreeSet<String>) {
        let now: std::collections::BTreeMap<String, u32> = containers
            .iter()
            .filter(|c| !c.id.is_empty())
            .map(|c| (c.id.clone(), c.restarts))
            .collect();
        let baseline = self.first.get_or_insert_with(|| now.clone());
        let mut events = 0u32;
        let mut services = std::collections::BTreeSet::new();
        for c in containers.iter().filter(|c| !c.id.is_empty()) {
            let extra = match baseline.get(&c.id) {
                Some(b) => c.restarts.saturating_sub(*b),
                None => 1 + c.restarts,
            };
            if extra > 0 {
                services.insert(c.service.clone());
            }
            events += extra;
        }
        events += baseline.keys().filter(|id| !now.contains_key(*id)).count() as u32;
        (events, services)
    }
}

/// Prints one round of the gate and what it decided (stderr).
pub fn round_line(round: &Round, decision: &Decision) -> String {
    let at = round.at.as_secs_f64();
    match decision {
        Decision::Pending {
            consecutive_ok,
            window_started,
        } => {
            let phase = match window_started {
                Some(_) => "holding steady".to_string(),
                None => format!("{consecutive_ok} ok in a row"),
            };
            if round.all_ok {
                format!("[{at:5.1}s] ok ({phase})")
            } else {
                format!("[{at:5.1}s] not yet: {}", round.problems.join("; "))
            }
        }
        Decision::Pass => format!("[{at:5.1}s] healthy"),
        Decision::Fail { .. } => format!("[{at:5.1}s] unhealthy"),
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

    fn container(id: &str, restarts: u32) -> crate::runtime::compose::ContainerState {
        crate::runtime::compose::ContainerState {
            service: "web".into(),
            id: id.into(),
            status: "running".into(),
            health: None,
            restarts,
            started_at: String::new(),
        }
    }

    #[test]
    fn restarts_count_from_the_first_look_and_a_replaced_container_counts() {
        let mut r = Restarts::default();
        // Restarts before the first look do not count.
        assert_eq!(r.since_first(&[container("a", 3)]).0, 0);
        assert_eq!(r.since_first(&[container("a", 3)]).0, 0);
        let (events, services) = r.since_first(&[container("a", 5)]);
        assert_eq!(events, 2);
        assert_eq!(services.into_iter().collect::<Vec<_>>(), ["web"]);
        // Recreated: the old id is gone (1) and the new one is new (1).
        assert_eq!(r.since_first(&[container("b", 0)]).0, 2);
        // A service without a container (empty id) is neither counted nor a baseline.
        let mut r = Restarts::default();
        assert_eq!(r.since_first(&[container("", 0)]).0, 0);
        assert_eq!(r.since_first(&[container("c", 0)]).0, 1);
    }

    #[test]
    fn a_container_not_running_or_unhealthy_is_a_problem() {
        assert_eq!(container_problem(&container("a", 0)), None);
        let mut exited = container("a", 0);
        exited.status = "exited".into();
        assert_eq!(container_problem(&exited).unwrap(), "service web: exited");
        let mut sick = container("a", 0);
        sick.health = Some("unhealthy".into());
        assert_eq!(
            container_problem(&sick).unwrap(),
            "service web: running (unhealthy)"
        );
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
