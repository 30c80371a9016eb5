//! A release that only changes an image tag (issue 14, point 6): the demo stack plus
//! `sidecar`, an image-only service (`image:`, no `build:`) that the health gate checks.
//! The deploy must run the new image, roll back to the old one when the new one fails
//! its gate, and refuse (before anything stops) an image it cannot pull.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::deploy::{steps, Stack};
use crate::support::{busybox_image, free_port, git, remove_image_repository};

/// What the gate requires of the sidecar's `/health` body.
const SIDECAR_OK: &str = "sidecar ok";

/// The deploy stack with `sidecar` (`image: <project>-sidecar:1`, httpd on its own port)
/// in its Compose file and its gate, running v1 (deployed once, so v1 is stable).
struct SidecarStack {
    stack: Stack,
    port: u16,
    repository: String,
    v1: String,
}

impl SidecarStack {
    fn new() -> Option<SidecarStack> {
        let stack = Stack::new("")?;
        let port = free_port();
        let repository = format!("{}-sidecar", stack.project);
        let mut s = SidecarStack {
            stack,
            port,
            repository,
            v1: String::new(),
        };
        s.build_image("1", Some(&format!("{SIDECAR_OK} 1")));
        let dev = s.stack.dev();
        let compose = fs::read_to_string(dev.join("docker-compose.yml")).unwrap();
        fs::write(
            dev.join("docker-compose.yml"),
            format!(
                "{compose}  sidecar:\n    image: {}:1\n    init: true\n    network_mode: host\n    command: [\"/bin/httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/www\"]\n",
                s.repository
            ),
        )
        .unwrap();
        let config = fs::read_to_string(dev.join("stablehand.toml")).unwrap();
        let config = config.replace(
            "containers = [\"web\"]",
            "containers = [\"web\", \"sidecar\"]",
        );
        fs::write(
            dev.join("stablehand.toml"),
            format!(
                "{config}\n[[health.http]]\nurl = \"http://127.0.0.1:{port}/health\"\ntimeout = \"1s\"\ncontains = \"{SIDECAR_OK}\"\n"
            ),
        )
        .unwrap();
        let v1 = s.stack.commit("v1: with a sidecar");
        // Production runs v1 with its sidecar, started before stablehand's first deploy.
        git(&s.stack.app(), &["pull", "-q", "--ff-only"]);
        assert!(s
            .stack
            .compose(&["up", "-d", "sidecar"])
            .status()
            .unwrap()
            .success());
        let (code, v) = s.stack.deploy(&[]);
        assert_eq!(code, 0, "v1 deploys: {v:#}");
        assert_eq!(s.sidecar_image().as_deref(), Some(s.image("1").as_str()));
        s.v1 = v1;
        Some(s)
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    /// Builds `<repository>:<tag>` from the busybox image; it serves `health_body` as
    /// `/health`, or no health file (404) when None.
    fn build_image(&self, tag: &str, health_body: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("www")).unwrap();
        if let Some(body) = health_body {
            fs::write(dir.path().join("www/health"), format!("{body}\n")).unwrap();
        }
        fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {}\nCOPY www /www\n", busybox_image()),
        )
        .unwrap();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &self.image(tag)])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(built.success(), "docker build {}", self.image(tag));
    }

    /// A release whose only change is the sidecar's image tag; returns its sha.
    fn release_tag(&self, tag: &str) -> String {
        let file = self.stack.dev().join("docker-compose.yml");
        let compose = fs::read_to_string(&file).unwrap();
        let from = format!("image: {}:1\n", self.repository);
        assert!(compose.contains(&from), "{compose}");
        fs::write(
            &file,
            compose.replace(&from, &format!("image: {}\n", self.image(tag))),
        )
        .unwrap();
        self.stack.commit(&format!("v2: sidecar {tag}"))
    }

    /// The image reference the running sidecar container was created from.
    fn sidecar_image(&self) -> Option<String> {
        let out = Command::new("docker")
            .args(["ps", "--format", "{{.Image}}"])
            .args(self.service_filter("sidecar"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!out.is_empty()).then_some(out)
    }

    /// Each app container (web, sidecar) as `service id started-at`, sorted.
    fn app_containers(&self) -> Vec<String> {
        let mut all = Vec::new();
        for service in ["web", "sidecar"] {
            let ids = Command::new("docker")
                .args(["ps", "-a", "-q", "--no-trunc"])
                .args(self.service_filter(service))
                .output()
                .unwrap();
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let started = Command::new("docker")
                    .args(["inspect", "--format", "{{.State.StartedAt}}", id])
                    .output()
                    .unwrap();
                all.push(format!(
                    "{service} {id} {}",
                    String::from_utf8_lossy(&started.stdout).trim()
                ));
            }
        }
        all.sort();
        all
    }

    fn service_filter(&self, service: &str) -> [String; 4] {
        [
            "--filter".into(),
            format!("label=com.docker.compose.project={}", self.stack.project),
            "--filter".into(),
            format!("label=com.docker.compose.service={service}"),
        ]
    }

    /// The sidecar's `/health` body, or the error status.
    fn sidecar_health(&self) -> String {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(r) => r.into_string().unwrap().trim().to_string(),
            Err(ureq::Error::Status(code, _)) => format!("status {code}"),
            Err(e) => format!("{e}"),
        }
    }
}

impl Drop for SidecarStack {
    fn drop(&mut self) {
        // Containers first: an image a container uses cannot be removed.
        let _ = self.stack.compose(&["down", "-t", "2"]).status();
        remove_image_repository(&self.repository);
    }
}

#[test]
fn a_release_that_only_changes_an_image_tag_runs_the_new_image() {
    let Some(s) = SidecarStack::new() else { return };
    s.build_image("2", Some(&format!("{SIDECAR_OK} 2")));
    let v2 = s.release_tag("2");

    let (code, v) = s.stack.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["outcome"], "deployed");
    assert_eq!(
        s.sidecar_image().as_deref(),
        Some(s.image("2").as_str()),
        "the sidecar was recreated from the release's image"
    );
    assert_eq!(s.sidecar_health(), format!("{SIDECAR_OK} 2"));
    assert_eq!(s.stack.head(), v2);
    assert_eq!(s.stack.remote_stable().as_deref(), Some(v2.as_str()));
    assert_eq!(s.stack.health_status(), Some(200), "web serves too");
}

#[test]
fn a_new_image_that_fails_the_gate_is_rolled_back_to_the_old_image() {
    let Some(s) = SidecarStack::new() else { return };
    // :2 serves no health file: only the new sidecar can fail the gate, the old one
    // (still running if nothing restarted it) passes it.
    s.build_image("2", None);
    s.release_tag("2");

    let (code, v) = s.stack.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["outcome"], "rolled_back");
    assert_eq!(v["rollback"]["target"], s.v1.as_str());
    assert_eq!(
        s.sidecar_image().as_deref(),
        Some(s.image("1").as_str()),
        "the rollback put the old image back: {v:#}"
    );
    assert_eq!(s.sidecar_health(), format!("{SIDECAR_OK} 1"));
    assert_eq!(s.stack.head(), s.v1);
    assert_eq!(s.stack.remote_stable().as_deref(), Some(s.v1.as_str()));
}

#[test]
fn an_image_that_cannot_be_pulled_is_refused_before_anything_stops() {
    let Some(s) = SidecarStack::new() else { return };
    // A tag that exists nowhere: not on this host, and no registry has it.
    s.release_tag("missing");
    let before = s.app_containers();
    assert_eq!(before.len(), 2, "{before:?}");

    let (code, v) = s.stack.deploy(&[]);
    assert_eq!(code, 10, "{v:#}");
    assert_eq!(v["outcome"], "refused");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "could not pull image {} for service sidecar",
            s.image("missing")
        )),
        "{message}"
    );
    let steps = steps(&v);
    assert!(steps.contains(&"build:failed".to_string()), "{steps:?}");
    assert!(
        !steps.iter().any(|s| s.starts_with("stop")),
        "nothing was stopped: {steps:?}"
    );
    assert_eq!(
        s.app_containers(),
        before,
        "the same containers run, never restarted"
    );
    assert_eq!(s.sidecar_image().as_deref(), Some(s.image("1").as_str()));
    assert_eq!(s.sidecar_health(), format!("{SIDECAR_OK} 1"));
    assert_eq!(
        s.stack.head(),
        s.v1,
        "the code is back at the running commit"
    );
}
