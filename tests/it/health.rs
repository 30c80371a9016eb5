//! The health gate against real containers on a real Docker engine (busybox apps built
//! from scratch, host networking): healthy apps pass; 500s, crash loops, failing Docker
//! healthchecks and hanging endpoints fail, each for the right reason.

use std::fs;

use crate::support::{busybox_image, docker_available, free_port, unique, App};

/// A compose project with one `app` service; brought down on drop.
struct AppStack {
    app: App,
    project: String,
    port: u16,
}

impl AppStack {
    /// `service` is the YAML of the app service below `image`/`network_mode` (indented
    /// by 4); `health` is extra `[health]` config.
    fn up(service: &str, health: &str) -> Option<AppStack> {
        if !docker_available() {
            return None;
        }
        let image = busybox_image();
        let port = free_port();
        let project = unique("shhealth").replace('_', "");
        let service = service.replace("PORT", &port.to_string());
        let config = format!(
            "[runtime]\nproject = \"{project}\"\n\n[database]\nmode = \"direct\"\n\n[health]\ninterval = \"500ms\"\n{health}\n"
        );
        let app = App::new(&config.replace("PORT", &port.to_string()));
        fs::write(
            app.path().join("docker-compose.yml"),
            format!("version: \"2.4\"\nservices:\n  app:\n    image: {image}\n    network_mode: host\n{service}"),
        )
        .unwrap();
        let stack = AppStack { app, project, port };
        let ok = stack.compose(&["up", "-d"]).status().unwrap().success();
        assert!(ok, "compose up");
        Some(stack)
    }

    fn compose(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new("docker-compose");
        c.args(["-p", &self.project])
            .args(args)
            .current_dir(self.app.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    }

    /// Runs `stablehand --json health`; returns the exit code and the verdict.
    fn health(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.app.cmd().args(["--json", "health"]).output().unwrap();
        let verdict = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), verdict)
    }
}

impl Drop for AppStack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "1"]).status();
    }
}

const HTTPD: &str = r#"    command: ["/bin/sh", "-c", "mkdir -p /www && echo ok > /www/health && echo starting app && exec httpd -f -p PORT -h /www"]
"#;

#[test]
fn a_healthy_app_passes() {
    let Some(stack) = AppStack::up(
        HTTPD,
        "containers = [\"app\"]\nconsecutive = 2\nstable_for = \"3s\"\ntimeout = \"30s\"\n[[health.http]]\nurl = \"http://127.0.0.1:PORT/health\"\ncontains = \"ok\"\n",
    ) else {
        return;
    };
    let (code, v) = stack.health();
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["passed"], true);
    assert_eq!(v["probes"][0]["status"], 200);
    assert_eq!(v["containers"][0]["service"], "app");
    assert_eq!(v["containers"][0]["status"], "running");
    assert!(
        v["took_ms"].as_u64().unwrap() >= 3000,
        "the stability window was held: {v}"
    );
    let _ = stack.port;
}

#[test]
fn an_app_answering_500_fails() {
    let Some(stack) = AppStack::up(
        r#"    command: ["/bin/sh", "-c", "while true; do printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror' | nc -l -p PORT >/dev/null; done"]
"#,
        "consecutive = 2\nstable_for = \"2s\"\ntimeout = \"5s\"\n[[health.http]]\nurl = \"http://127.0.0.1:PORT/health\"\ntimeout = \"1s\"\n",
    ) else {
        return;
    };
    let (code, v) = stack.health();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["passed"], false);
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("no 2 successful checks in a row within 5s"),
        "{reason}"
    );
    assert!(reason.contains("HTTP 500"), "{reason}");
}

#[test]
fn a_crash_loop_fails_inside_the_stability_window() {
    // Serves 200 for 4 s, then exits; `restart: always` brings it back: "Up" most of the
    // time, and a one-shot check would pass.
    let Some(stack) = AppStack::up(
        r#"    restart: always
    command: ["/bin/sh", "-c", "mkdir -p /www && echo ok > /www/health && echo starting app && httpd -p PORT -h /www && sleep 4 && echo crashing && exit 1"]
"#,
        "containers = [\"app\"]\nconsecutive = 2\nstable_for = \"15s\"\ntimeout = \"40s\"\n[[health.http]]\nurl = \"http://127.0.0.1:PORT/health\"\ntimeout = \"1s\"\n",
    ) else {
        return;
    };
    let (code, v) = stack.health();
    assert_eq!(code, Some(1), "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("restarted"), "{reason}");
    assert!(
        v["took_ms"].as_u64().unwrap() < 15_000,
        "failed inside the window, at the restart: {v}"
    );
    let logs = v["logs"]["app"].as_str().unwrap_or_default();
    assert!(
        logs.contains("crashing"),
        "the verdict carries the service's last log lines: {v}"
    );
}

#[test]
fn a_failing_docker_healthcheck_fails() {
    let Some(stack) = AppStack::up(
        &format!(
            "{HTTPD}    healthcheck:\n      test: [\"CMD\", \"/bin/false\"]\n      interval: 1s\n      timeout: 1s\n      retries: 1\n"
        ),
        "containers = [\"app\"]\nconsecutive = 2\nstable_for = \"2s\"\ntimeout = \"8s\"\n[[health.http]]\nurl = \"http://127.0.0.1:PORT/health\"\n",
    ) else {
        return;
    };
    let (code, v) = stack.health();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        v["probes"][0]["ok"], true,
        "HTTP alone would have passed: {v}"
    );
    assert_eq!(v["containers"][0]["health"], "unhealthy", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("service app: running (unhealthy)"),
        "{v}"
    );
}

#[test]
fn a_hanging_endpoint_hits_the_probe_timeout() {
    // Accepts the request and never answers (a CGI script that sleeps).
    let Some(stack) = AppStack::up(
        r#"    command: ["/bin/sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\nsleep 30\n' > /www/cgi-bin/health && chmod +x /www/cgi-bin/health && exec httpd -f -p PORT -h /www"]
"#,
        "consecutive = 1\nstable_for = \"1s\"\ntimeout = \"6s\"\n[[health.http]]\nurl = \"http://127.0.0.1:PORT/cgi-bin/health\"\ntimeout = \"1s\"\n",
    ) else {
        return;
    };
    let (code, v) = stack.health();
    assert_eq!(code, Some(1), "{v}");
    let probe = &v["probes"][0];
    assert_eq!(probe["ok"], false);
    assert!(probe["status"].is_null(), "{v}");
    assert!(
        probe["millis"].as_u64().unwrap() < 3000,
        "the probe was cut at its 1 s timeout: {v}"
    );
    assert!(
        probe["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timed out"),
        "{v}"
    );
}

#[test]
fn nothing_to_check_is_a_config_error() {
    let app = App::new("[database]\nmode = \"direct\"\n");
    app.cmd()
        .arg("health")
        .assert()
        .code(78)
        .stderr(predicates::str::contains("nothing to check"));
}

/// Compose detection: v1 is what this machine has; v2 (`docker compose`) is not installed
/// here, so a fake `docker` that answers `compose version` stands in for it (failure
/// injection of what a real v2 would print; the real engine is not involved).
#[test]
fn compose_v2_is_preferred_and_v1_is_the_fallback() {
    use stablehand::runtime::compose::{Compose, Flavor};
    let app = tempfile::tempdir().unwrap();
    let runtime = stablehand::config::RuntimeConfig::default();

    // Fake v2: `docker compose version` succeeds and records how it was called.
    let bin = tempfile::tempdir().unwrap();
    crate::support::write_script(
        &bin.path().join("docker"),
        "#!/bin/sh\nif [ \"$1 $2\" = \"compose version\" ]; then echo 'Docker Compose version v2.29.7'; exit 0; fi\nexit 1\n",
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let detected = with_path(&path, || Compose::detect(app.path(), &runtime)).unwrap();
    assert_eq!(detected.flavor, Flavor::V2);
    let cmd = detected.cmd(["ps", "-q"]);
    assert!(
        cmd.display().starts_with("docker compose ps -q"),
        "{}",
        cmd.display()
    );

    // No docker compose at all: a clear error naming both.
    let empty = tempfile::tempdir().unwrap();
    let err = with_path(&empty.path().display().to_string(), || {
        Compose::detect(app.path(), &runtime)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("neither `docker compose` (v2) nor `docker-compose` (v1)"),
        "{err}"
    );

    // This machine's real docker-compose (v1), when present.
    if std::process::Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let real = Compose::detect(app.path(), &runtime).unwrap();
        let has_v2 = std::process::Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert_eq!(real.flavor, if has_v2 { Flavor::V2 } else { Flavor::V1 });
    } else {
        crate::support::missing("docker-compose", "not installed");
    }
}

/// Runs `f` with PATH set to `path` (this test binary's tests each run in their own
/// process under nextest, so changing the environment is contained).
fn with_path<T>(path: &str, f: impl FnOnce() -> T) -> T {
    let old = std::env::var_os("PATH");
    std::env::set_var("PATH", path);
    let out = f();
    match old {
        Some(p) => std::env::set_var("PATH", p),
        None => std::env::remove_var("PATH"),
    }
    out
}
