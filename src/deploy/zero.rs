//! Deploys behind `stablehand proxy` (issue 18). A release whose migrations the old code
//! can run beside goes blue/green: it starts as its own Compose project on `proxy.port`
//! while the old release serves, is gated there, takes traffic at a switch, and is
//! watched with the old release kept warm (a failure switches straight back). Then it is
//! promoted: the main project is started on it while traffic stays on the colour, and
//! traffic returns to `proxy.upstream`, so between deploys the app always runs in the
//! main project (rollback by hand, `status` and image pruning need not know colours).
//! Any other release gets a maintenance window: 503 with `Retry-After` while the old
//! release stops and the new one starts.

use super::*;
use crate::config::{HealthConfig, ProxyConfig, Strategy};
use crate::migrations::compat::Compatibility;
use crate::proxy::{Change, Control};
use crate::runtime::colour::{self, Colour, Port};
use crate::runtime::compose::Compose;

/// The colour a new release runs as beside the main project.
pub const COLOUR: &str = "green";

/// How a release is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Way {
    /// Stop the old release, start the new one (no `[proxy]`).
    StopStart,
    BlueGreen,
    Maintenance,
}

impl Way {
    pub fn words(self) -> &'static str {
        match self {
            Way::StopStart => "stop and start",
            Way::BlueGreen => "blue/green",
            Way::Maintenance => "maintenance window",
        }
    }
}

/// The way chosen, and why: in the plan, the output and the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub way: Way,
    pub reason: String,
}

/// Chooses how the release is put in place. Pure.
pub fn choose(
    proxy: Option<&ProxyConfig>,
    forced: Option<Strategy>,
    compose: bool,
    compat: Option<&Compatibility>,
) -> Placement {
    let place = |way, reason: String| Placement { way, reason };
    let Some(proxy) = proxy else {
        return place(Way::StopStart, "no [proxy] is configured".into());
    };
    let strategy = forced.unwrap_or(proxy.strategy);
    let by = match forced {
        Some(_) => "--strategy",
        None => "proxy.strategy",
    };
    if !compose {
        return place(
            Way::Maintenance,
            "two releases run side by side only with runtime.kind = \"compose\"".into(),
        );
    }
    match (strategy, compat) {
        (Strategy::Maintenance, _) => place(Way::Maintenance, format!("{by} = maintenance")),
        (Strategy::BlueGreen, _) => place(Way::BlueGreen, format!("{by} = blue_green")),
        (Strategy::Auto, None) => place(
            Way::Maintenance,
            "the release's migrations are not read (database.migrations is not \"prisma\"), so the old code may not run beside them".into(),
        ),
        (Strategy::Auto, Some(c)) if c.compatible => {
            place(Way::BlueGreen, format!("old code beside it: {}", c.summary()))
        }
        (Strategy::Auto, Some(c)) => place(
            Way::Maintenance,
            format!("old code beside it: {}", c.summary()),
        ),
    }
}

/// The gate's probes pointed at `addr`: those aimed at the public address or at either
/// release's port go to `addr` instead; others stay. Pure.
pub fn health_at(h: &HealthConfig, p: &ProxyConfig, addr: &str) -> HealthConfig {
    let ours = [p.listen.clone(), p.upstream.clone(), p.next_upstream()];
    let port_of = |a: &str| a.rsplit(':').next().unwrap_or("").to_string();
    let mut out = h.clone();
    for probe in &mut out.http {
        let Ok(mut url) = url::Url::parse(&probe.url) else {
            continue;
        };
        let local = matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0")
        );
        let port = url.port_or_known_default().map(|p| p.to_string());
        if local && ours.iter().any(|a| Some(port_of(a)) == port) {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
            let _ = url.set_host(Some(host));
            let _ = url.set_port(port.parse().ok());
            probe.url = url.to_string();
        }
    }
    out
}

/// The proxy of this app, when `[proxy]` is set.
pub(super) fn proxy(loaded: &Loaded) -> Option<(&ProxyConfig, Control)> {
    loaded
        .config
        .proxy
        .as_ref()
        .map(|p| (p, Control::new(&loaded.state_dir())))
}

/// Preflight: the proxy answers and sends traffic to the main project.
pub(super) fn check_proxy(loaded: &Loaded) -> anyhow::Result<()> {
    let Some((p, control)) = proxy(loaded) else {
        return Ok(());
    };
    let state = control.state()?;
    if state.route.upstream != p.upstream || state.route.maintenance {
        bail!(
            "the proxy sends traffic to {}{} instead of proxy.upstream {}: an earlier deploy did not finish; run `stablehand recover` (or move it: `stablehand proxy switch {}`)",
            state.route.upstream,
            if state.route.maintenance { " (maintenance on)" } else { "" },
            p.upstream,
            p.upstream
        );
    }
    Ok(())
}

/// The new release's colour and the Compose that runs it.
fn colour_of(run: &Run, p: &ProxyConfig, target: &str) -> anyhow::Result<(Colour, Compose)> {
    let Runtime::Compose(app) = &run.runtime else {
        bail!("a blue/green deploy needs runtime.kind = \"compose\"");
    };
    let images = app
        .active_services()
        .into_iter()
        .filter_map(|name| {
            let spec = app.spec.service(&name)?;
            let image = match spec.build {
                true => crate::runtime::images::commit_tag(&spec.image, target),
                false => spec.image.clone(),
            };
            Some((name, image))
        })
        .collect();
    let colour = Colour {
        name: COLOUR.into(),
        main_project: app.spec.name.clone(),
        port: p.next_port(),
        how: match p.container_port {
            Some(inside) => Port::Container(inside),
            None => Port::Env(p.port_env.clone()),
        },
        images,
    };
    let compose = app.compose.for_project(
        vec![colour::file_path(&run.state_dir, COLOUR)],
        &colour.project(),
    );
    Ok((colour, compose))
}

fn main_compose<'r>(run: &'r Run) -> anyhow::Result<&'r Compose> {
    match &run.runtime {
        Runtime::Compose(app) => Ok(&app.compose),
        _ => bail!("a blue/green deploy needs runtime.kind = \"compose\""),
    }
}

/// Moves traffic to `upstream`; how long the proxy took to answer.
fn switch_to(control: &Control, upstream: &str, colour: &str) -> anyhow::Result<u64> {
    let t = Instant::now();
    control.change(&Change::Upstream {
        upstream: upstream.into(),
        colour: colour.into(),
    })?;
    Ok(t.elapsed().as_millis() as u64)
}

/// Waits until nothing is in flight on `upstream` (or `limit`); what was left.
fn drain(control: &Control, upstream: &str, limit: Duration) -> u64 {
    let t = Instant::now();
    loop {
        let left = control
            .state()
            .ok()
            .and_then(|s| s.upstreams.get(upstream).map(|c| c.in_flight))
            .unwrap_or(0);
        if left == 0 || t.elapsed() >= limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The blue/green steps after the backup: the verdict of the new release's gate; an
/// error when the watch after the switch failed (the commit is then marked failed).
pub(super) fn blue_green_steps(run: &mut Run) -> anyhow::Result<Verdict> {
    let (p, control) = proxy(run.loaded).context("blue/green needs [proxy]")?;
    let p = p.clone();
    let target = run.journal.target.clone();
    let (colour, compose) = colour_of(run, &p, &target)?;
    if run.loaded.config.database.snapshot {
        run.say("    no snapshot: the app is not stopped in a blue/green deploy (the verified backup covers the database)");
    }
    run_migrate_command(run)?;
    run.journal.colour = Some(colour.name.clone());
    run.save()?;
    run.step("start_next", |r| {
        colour::start(main_compose(r)?, &r.state_dir, &colour)?;
        r.note(format!(
            "{} runs as project {} on {} beside the running release",
            colour.images.keys().cloned().collect::<Vec<_>>().join(", "),
            colour.project(),
            p.next_upstream()
        ));
        Ok(())
    })?;
    let mut next_health = health_at(&run.loaded.config.health, &p, &p.next_upstream());
    next_health
        .containers
        .retain(|c| colour.images.contains_key(c));
    let verdict = run.step("gate", |r| {
        let verdict = r.gate_on(&next_health, Some(&compose), true)?;
        if !verdict.passed {
            r.journal.failed_commit = Some(r.journal.target.clone());
        }
        Ok(verdict)
    })?;
    if !verdict.passed {
        return Ok(verdict);
    }
    run.step("switch", |r| {
        let took = switch_to(&control, &p.next_upstream(), &colour.name)?;
        let left = drain(&control, &p.upstream, p.drain);
        r.note(format!(
            "traffic on {} ({took} ms); the old release drained{}, kept warm",
            p.next_upstream(),
            match left {
                0 => String::new(),
                n => format!(
                    " but for {n} request(s) still in flight after {:?}",
                    p.drain
                ),
            }
        ));
        Ok(())
    })?;
    run.step("watch", |r| {
        match watch(r, &p, &control, &next_health, &compose) {
            None => Ok(()),
            Some(why) => {
                r.journal.failed_commit = Some(r.journal.target.clone());
                bail!("the release failed during the watch after the switch: {why}")
            }
        }
    })?;
    run.journal.phase = Phase::Passed;
    run.save()?;
    promote(run, &p, &control, &colour)?;
    Ok(verdict)
}

/// Puts the watched release in the main project and traffic back on `proxy.upstream`,
/// then removes the colour. Also how `recover` finishes a passed blue/green deploy.
pub(super) fn promote(
    run: &mut Run,
    p: &ProxyConfig,
    control: &Control,
    colour: &Colour,
) -> anyhow::Result<()> {
    run.step("promote", |r| {
        r.runtime.start_app()?;
        let base = health_at(&r.loaded.config.health, p, &p.upstream);
        let compose = crate::health::main_compose(r.loaded, &base)?;
        let verdict = r.gate_on(&base, compose.as_ref(), false)?;
        if !verdict.passed {
            bail!(
                "the main project did not pass its gate on the new release ({}); traffic stays on {}",
                verdict.reason.unwrap_or_default(),
                p.next_upstream()
            );
        }
        let took = switch_to(control, &p.upstream, "base")?;
        let left = drain(control, &p.next_upstream(), p.drain);
        colour::remove(main_compose(r)?, &r.state_dir, colour)?;
        r.note(format!(
            "the main project runs the release; traffic on {} ({took} ms{}); {} removed",
            p.upstream,
            match left {
                0 => String::new(),
                n => format!(", {n} request(s) still in flight"),
            },
            colour.project()
        ));
        Ok(())
    })?;
    run.journal.colour = None;
    run.save()
}

/// Watches the release taking traffic for `proxy.watch`: the proxy's counts of its
/// failed requests, its probes and its containers (a restart ends the watch at once, as
/// in the gate). The reason it failed, or None.
fn watch(
    run: &Run,
    p: &ProxyConfig,
    control: &Control,
    health: &HealthConfig,
    compose: &Compose,
) -> Option<String> {
    if p.watch.is_zero() {
        return None;
    }
    run.say(&format!(
        "    watching for {} (switch back at {} failed requests or {} failed probe rounds)",
        humantime::format_duration(p.watch),
        p.watch_errors,
        health.consecutive.max(1)
    ));
    let upstream = p.next_upstream();
    let errors_of = |s: &crate::proxy::State| {
        s.upstreams
            .get(&upstream)
            .map_or(0, |c| c.server_errors + c.connection_errors)
    };
    let before = match control.state() {
        Ok(s) => errors_of(&s),
        Err(e) => return Some(format!("{e:#}")),
    };
    let started = Instant::now();
    let mut bad_rounds = 0u32;
    let mut restarts = crate::health::Restarts::default();
    while started.elapsed() < p.watch {
        if crate::process::interrupted() || crate::process::deferred_interrupt() {
            return Some("interrupted by a signal".into());
        }
        let errors = match control.state() {
            Ok(s) => errors_of(&s).saturating_sub(before),
            Err(e) => return Some(format!("{e:#}")),
        };
        if errors >= p.watch_errors.max(1) {
            return Some(format!(
                "{errors} request(s) failed (5xx or unreachable) on {upstream}"
            ));
        }
        let mut failed: Vec<String> = health
            .http
            .iter()
            .map(crate::health::probe_http)
            .filter_map(|r| r.problem())
            .collect();
        if !health.containers.is_empty() {
            let look = restarts.look(compose, &health.containers);
            if look.restarts > 0 {
                return Some(format!(
                    "a container of {} restarted {} time(s) during the watch",
                    look.restarted.into_iter().collect::<Vec<_>>().join(", "),
                    look.restarts
                ));
            }
            failed.extend(look.problems);
        }
        bad_rounds = if failed.is_empty() { 0 } else { bad_rounds + 1 };
        if bad_rounds >= health.consecutive.max(1) {
            return Some(format!(
                "{bad_rounds} probe round(s) failed in a row ({})",
                failed.join("; ")
            ));
        }
        std::thread::sleep(
            health
                .interval
                .min(p.watch.saturating_sub(started.elapsed())),
        );
    }
    run.say("    the watch passed");
    None
}

/// `database.migrate_command`, when set.
pub(super) fn run_migrate_command(run: &mut Run) -> anyhow::Result<()> {
    let migrate = run.loaded.config.database.migrate_command.clone();
    if migrate.trim().is_empty() {
        return Ok(());
    }
    run.step("migrate", |r| {
        Cmd::new("sh")
            .args(["-c", &migrate])
            .current_dir(&r.loaded.app_dir)
            .timeout(MIGRATE_TIMEOUT)
            .output()
            .with_context(|| format!("database.migrate_command {migrate:?} failed"))
            .map(drop)
    })
}

/// Starts the maintenance answer (503) of a deploy.
pub(super) fn maintenance_on(run: &mut Run) -> anyhow::Result<()> {
    let Some((_, control)) = proxy(run.loaded) else {
        return Ok(());
    };
    if run.journal.maintenance {
        return Ok(());
    }
    run.step("maintenance", |r| {
        control.change(&Change::Maintenance { on: true })?;
        r.journal.maintenance = true;
        r.note("the proxy answers 503 with Retry-After until a release passes its gate".into());
        Ok(())
    })
}

/// Behind the proxy, a rollback that stops the app does it behind the maintenance
/// answer; a proxy that does not answer does not stop the way back (it is said).
pub(super) fn maintenance_while_stopped(run: &mut Run) {
    if let Err(e) = maintenance_on(run) {
        run.say(&format!(
            "    the app stops without the maintenance answer: {e:#}"
        ));
    }
}

/// Ends the maintenance answer: traffic on `proxy.upstream` again. The window's length.
pub(super) fn maintenance_off(run: &mut Run) -> anyhow::Result<Option<u64>> {
    let Some((p, control)) = proxy(run.loaded) else {
        return Ok(None);
    };
    if !run.journal.maintenance {
        return Ok(None);
    }
    let since = run
        .journal
        .steps
        .iter()
        .rev()
        .find(|s| s.name == "maintenance")
        .map(|s| s.started_at);
    let upstream = p.upstream.clone();
    run.step("maintenance_off", |r| {
        switch_to(&control, &upstream, "base")?;
        r.journal.maintenance = false;
        Ok(())
    })?;
    let ms = since.map(|t| jiff::Timestamp::now().duration_since(t).as_millis().max(0) as u64);
    if let Some(ms) = ms {
        run.note(format!(
            "traffic on {upstream} again after a {:.1} s maintenance window",
            ms as f64 / 1000.0
        ));
    }
    Ok(ms)
}

/// Before a rollback behind the proxy: traffic goes back to the old release if it is
/// still warm (blue/green before its promotion; `run.warm` then), and the colour is
/// removed (a rollback that stops the app runs behind the maintenance answer). How long
/// the switch back took, when there was one.
pub(super) fn before_rollback(run: &mut Run) -> anyhow::Result<Option<u64>> {
    let Some((p, control)) = proxy(run.loaded) else {
        return Ok(None);
    };
    let p = p.clone();
    let promoting = run.journal.steps.iter().any(|s| s.name == "promote");
    let mut took = None;
    if run.journal.colour.is_some() && !promoting {
        let state = control.state().ok();
        let on_colour = state
            .as_ref()
            .is_none_or(|s| s.route.upstream != p.upstream || s.route.maintenance);
        if on_colour {
            let ms = run.step("switch_back", |r| {
                let ms = switch_to(&control, &p.upstream, "base")?;
                r.note(format!(
                    "traffic back on the old release at {} in {ms} ms",
                    p.upstream
                ));
                Ok(ms)
            })?;
            took = Some(ms);
        }
        run.warm = true;
    }
    if run.journal.colour.is_some() {
        remove_colour(run, &p)?;
    }
    Ok(took)
}

/// Removes the new release's colour, when it runs.
fn remove_colour(run: &mut Run, p: &ProxyConfig) -> anyhow::Result<()> {
    let target = run.journal.target.clone();
    let (colour, _) = colour_of(run, p, &target)?;
    run.step("remove_next", |r| {
        colour::remove(main_compose(r)?, &r.state_dir, &colour)?;
        r.note(format!("{} removed", colour.project()));
        Ok(())
    })?;
    run.journal.colour = None;
    run.save()
}

/// After a rollback behind the proxy: traffic resumes when the rolled-back release is
/// healthy (the maintenance answer stays otherwise: users see the page, not errors).
pub(super) fn after_rollback(run: &mut Run, report: &RollbackReport) -> Option<u64> {
    let healthy = report.gate.as_ref().is_some_and(|g| g.passed)
        || (run.warm && report.db.as_ref().is_none_or(|d| !needs_stop(d)));
    match healthy {
        true => maintenance_off(run).ok().flatten(),
        false => None,
    }
}

/// Whether a database action needs the app stopped.
pub(super) fn needs_stop(action: &DbAction) -> bool {
    matches!(
        action,
        DbAction::SwapSnapshot { .. } | DbAction::Restore { .. }
    )
}

/// `recover` of a deploy behind the proxy: the colour removed (or the passed release
/// promoted first), traffic on the main project.
pub(super) fn recover_traffic(run: &mut Run) -> anyhow::Result<()> {
    let Some((p, control)) = proxy(run.loaded) else {
        return Ok(());
    };
    let p = p.clone();
    if run.journal.colour.is_some() && run.journal.phase == Phase::Passed {
        let target = run.journal.target.clone();
        let (colour, _) = colour_of(run, &p, &target)?;
        return promote(run, &p, &control, &colour);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::compat::Finding;

    fn proxy(strategy: Strategy) -> ProxyConfig {
        toml::from_str::<ProxyConfig>(&format!(
            "listen = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:3000\"\nstrategy = \"{}\"",
            match strategy {
                Strategy::Auto => "auto",
                Strategy::BlueGreen => "blue_green",
                Strategy::Maintenance => "maintenance",
            }
        ))
        .unwrap()
    }

    fn compat(compatible: bool) -> Compatibility {
        Compatibility {
            compatible,
            migrations: vec!["20260101_x".into()],
            reasons: match compatible {
                true => vec![],
                false => vec![Finding {
                    migration: "20260101_x".into(),
                    statement: "ALTER TABLE m DROP COLUMN body".into(),
                    why: "drops column m.body".into(),
                }],
            },
        }
    }

    #[test]
    fn the_way_follows_the_migrations_unless_forced() {
        let auto = proxy(Strategy::Auto);
        assert_eq!(choose(None, None, true, None).way, Way::StopStart);
        assert_eq!(
            choose(Some(&auto), None, true, Some(&compat(true))).way,
            Way::BlueGreen
        );
        let no = choose(Some(&auto), None, true, Some(&compat(false)));
        assert_eq!(no.way, Way::Maintenance);
        assert!(no.reason.contains("drops column m.body"), "{}", no.reason);
        assert_eq!(choose(Some(&auto), None, true, None).way, Way::Maintenance);
        assert_eq!(
            choose(
                Some(&auto),
                Some(Strategy::BlueGreen),
                true,
                Some(&compat(false))
            )
            .way,
            Way::BlueGreen
        );
        assert_eq!(
            choose(
                Some(&proxy(Strategy::Maintenance)),
                None,
                true,
                Some(&compat(true))
            )
            .way,
            Way::Maintenance
        );
        let command = choose(Some(&auto), Some(Strategy::BlueGreen), false, None);
        assert_eq!(command.way, Way::Maintenance, "{}", command.reason);
    }

    #[test]
    fn probes_at_the_public_or_either_release_port_go_to_the_release_gated() {
        let p = proxy(Strategy::Auto);
        let h: HealthConfig = toml::from_str(
            "[[http]]\nurl = \"http://127.0.0.1:8080/health\"\n[[http]]\nurl = \"http://localhost:3000/up?x=1\"\n[[http]]\nurl = \"http://127.0.0.1:9999/other\"\n[[http]]\nurl = \"https://example.com/\"",
        )
        .unwrap();
        let at = health_at(&h, &p, &p.next_upstream());
        let urls: Vec<&str> = at.http.iter().map(|x| x.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:3001/health",
                "http://127.0.0.1:3001/up?x=1",
                "http://127.0.0.1:9999/other",
                "https://example.com/"
            ]
        );
    }
}
