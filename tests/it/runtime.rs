//! The runtime on a real Docker engine with Compose: services with `build:` found by
//! default, per-commit image tags, a rollback to a retained release that builds nothing
//! (proved three ways: no Dockerfile to build from, the image id, and Docker's events),
//! a rebuild only when the images are gone, and pruning that keeps exactly the
//! configured set.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use stablehand::runtime::Runtime;

use crate::support::{
    busybox_image, docker_available, free_port, git, remove_image_repository, unique, wait_for, App,
};

/// A git repo whose app service `web` is built from a Dockerfile and serves
/// `/www/version.txt` with httpd; a `sidecar` service runs a plain image.
struct BuiltApp {
    app: App,
    project: String,
    port: u16,
}

impl BuiltApp {
    fn new(extra_runtime: &str) -> Option<BuiltApp> {
        if !docker_available() {
            return None;
        }
        let base = busybox_image();
        let port = free_port();
        let project = unique("shrt").replace('_', "");
        let app = App::new(&format!(
            "[runtime]\nproject = \"{project}\"\n{extra_runtime}\n[database]\nmode = \"direct\"\n"
        ));
        let dir = app.path();
        fs::write(
            dir.join("Dockerfile"),
            // app-id.txt makes every layer after FROM this test's own (no cache shared with
            // other tests), so the build containers seen in Docker's events are this app's.
            format!("FROM {base}\nCOPY app-id.txt version.txt /www/\nRUN date > /www/built-at\n"),
        )
        .unwrap();
        fs::write(
            dir.join("docker-compose.yml"),
            format!(
                "version: \"2.4\"\nservices:\n  web:\n    build: .\n    init: true\n    network_mode: host\n    command: [\"httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/www\"]\n  sidecar:\n    image: {base}\n    network_mode: host\n    command: [\"sleep\", \"3600\"]\n"
            ),
        )
        .unwrap();
        fs::write(dir.join("version.txt"), "v1\n").unwrap();
        fs::write(dir.join("app-id.txt"), &project).unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "v1"]);
        Some(BuiltApp { app, project, port })
    }

    fn runtime(&self) -> Runtime {
        let loaded = stablehand::config::load(&self.app.path().join("stablehand.toml")).unwrap();
        Runtime::load(&loaded).unwrap()
    }

    /// Commits a new version.txt; returns the sha.
    fn commit_version(&self, version: &str) -> String {
        let dir = self.app.path();
        fs::write(dir.join("version.txt"), format!("{version}\n")).unwrap();
        git(dir, &["commit", "-q", "-am", version]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn checkout(&self, sha: &str) {
        git(self.app.path(), &["checkout", "-q", sha]);
    }

    /// What the app serves, waiting up to 20 s for it to answer.
    fn serving(&self, want: &str) -> String {
        let url = format!("http://127.0.0.1:{}/version.txt", self.port);
        wait_for(Duration::from_secs(20), || {
            let body = ureq::get(&url)
                .timeout(Duration::from_secs(2))
                .call()
                .ok()?
                .into_string()
                .ok()?;
            (body.trim() == want).then_some(body.trim().to_string())
        })
        .unwrap_or_else(|| format!("not {want}"))
    }

    fn image_repo(&self) -> String {
        format!("{}_web", self.project)
    }

    fn image_id(&self, reference: &str) -> Option<String> {
        let out = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    /// The `sh-` tags of the web image, sorted.
    fn commit_tags(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["image", "ls", "--format", "{{.Tag}}", &self.image_repo()])
            .output()
            .unwrap();
        let mut tags: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|t| t.starts_with("sh-"))
            .map(str::to_string)
            .collect();
        tags.sort();
        tags
    }

    /// The layer ids (12 characters) of an image's history.
    fn history(&self, image: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["history", "-q", image])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.len() == 12)
            .map(str::to_string)
            .collect()
    }

    fn running_image(&self) -> String {
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "ps", "-q", "web"])
            .current_dir(self.app.path())
            .output()
            .unwrap();
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let out = Command::new("docker")
            .args(["inspect", "--format", "{{.Image}}", &id])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for BuiltApp {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "down", "-t", "1"])
            .current_dir(self.app.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        remove_image_repository(&self.image_repo());
    }
}

fn sh12(sha: &str) -> String {
    format!("sh-{}", &sha[..12])
}

#[test]
fn services_with_a_build_section_are_the_default_and_images_get_commit_tags() {
    let Some(app) = BuiltApp::new("") else { return };
    let runtime = app.runtime();
    let Runtime::Compose(compose) = &runtime else {
        panic!("a compose file makes the runtime compose")
    };
    assert_eq!(
        compose.services,
        vec!["web".to_string()],
        "sidecar has no build:"
    );
    assert_eq!(compose.spec.service("web").unwrap().image, app.image_repo());

    let v1 = git(app.app.path(), &["rev-parse", "HEAD"]);
    let built = runtime.build(&v1).unwrap();
    assert_eq!(
        built.tagged,
        vec![format!("{}:{}", app.image_repo(), sh12(&v1))]
    );
    runtime.start_app().unwrap();
    assert_eq!(app.serving("v1"), "v1");
    assert!(
        runtime.stop_app().unwrap(),
        "the app service is stopped (not the sidecar)"
    );
    let state = compose.container_states().unwrap();
    assert_eq!(state[0].status, "exited", "{state:?}");

    // The record of builds is where the deploy keeps state.
    let record = fs::read_to_string(app.app.path().join(".stablehand/images.json")).unwrap();
    assert!(record.contains(&v1[..12]), "{record}");
}

#[test]
fn rolling_back_to_a_retained_release_builds_nothing_and_a_missing_one_is_rebuilt() {
    let Some(app) = BuiltApp::new("") else { return };
    let runtime = app.runtime();
    let v1 = git(app.app.path(), &["rev-parse", "HEAD"]);
    runtime.build(&v1).unwrap();
    let v1_image = app
        .image_id(&format!("{}:{}", app.image_repo(), sh12(&v1)))
        .unwrap();
    let v2 = app.commit_version("v2");
    runtime.build(&v2).unwrap();
    runtime.start_app().unwrap();
    assert_eq!(app.serving("v2"), "v2");
    assert_ne!(app.running_image(), v1_image);

    // Back to v1's code, with the Dockerfile gone: any build would fail.
    app.checkout(&v1);
    let dockerfile = app.app.path().join("Dockerfile");
    fs::rename(&dockerfile, app.app.path().join("Dockerfile.away")).unwrap();
    let docker_time =
        |t: jiff::Timestamp| format!("{}.{:09}", t.as_second(), t.subsec_nanosecond());
    let since = docker_time(jiff::Timestamp::now());
    let switched = runtime.switch_to(&v1).unwrap();
    let until = docker_time(jiff::Timestamp::now());
    assert!(!switched.rebuilt, "{switched:?}");
    assert_eq!(switched.images[0].source, "retained");
    assert_eq!(app.serving("v1"), "v1");
    assert_eq!(
        app.running_image(),
        v1_image,
        "the container runs v1's retained image"
    );

    // Docker's own record: no build step ran. A build runs each RUN step in a container
    // created from this app's own layers; none was created during the switch.
    let events = Command::new("docker")
        .args([
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.image}}",
        ])
        .output()
        .unwrap();
    let events = String::from_utf8(events.stdout).unwrap();
    let base_layers = app.history(busybox_image());
    let own_layers: Vec<String> = [v1.as_str(), v2.as_str()]
        .iter()
        .flat_map(|c| app.history(&format!("{}:{}", app.image_repo(), sh12(c))))
        .filter(|l| !base_layers.contains(l))
        .collect();
    assert!(own_layers.len() >= 2, "{own_layers:?}");
    for line in events.lines() {
        let image = line.split_whitespace().nth(2).unwrap_or("");
        let layer = image.strip_prefix("sha256:").unwrap_or("");
        assert!(
            layer.len() < 12 || !own_layers.contains(&layer[..12].to_string()),
            "a build step of this app ran during the switch: {line}\n{events}"
        );
    }
    assert!(
        events.contains("create"),
        "the service was recreated: {events}"
    );

    // Without a retained image the switch rebuilds, and says so.
    fs::rename(app.app.path().join("Dockerfile.away"), &dockerfile).unwrap();
    let v2_tag = format!("{}:{}", app.image_repo(), sh12(&v2));
    assert!(Command::new("docker")
        .args(["image", "rm", &v2_tag])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    app.checkout(&v2);
    let switched = runtime.switch_to(&v2).unwrap();
    assert!(switched.rebuilt, "{switched:?}");
    assert_eq!(switched.images[0].source, "rebuilt");
    assert_eq!(app.serving("v2"), "v2");
    assert!(
        app.image_id(&v2_tag).is_some(),
        "the rebuilt image is tagged again"
    );
}

#[test]
fn pruning_keeps_exactly_the_newest_builds_and_the_protected_release() {
    let Some(app) = BuiltApp::new("keep_images = 3\n") else {
        return;
    };
    let runtime = app.runtime();
    let mut commits = vec![git(app.app.path(), &["rev-parse", "HEAD"])];
    runtime.build(&commits[0]).unwrap();
    for i in 2..=6 {
        commits.push(app.commit_version(&format!("v{i}")));
        runtime.build(commits.last().unwrap()).unwrap();
    }
    assert_eq!(app.commit_tags().len(), 6);
    // v2 is latest-stable (protected); keep_images = 3 keeps v6, v5, v4.
    let pruned = runtime.prune_images(&[commits[1].clone()]).unwrap();
    let mut want: Vec<String> = [1, 3, 4, 5].iter().map(|&i| sh12(&commits[i])).collect();
    want.sort();
    assert_eq!(app.commit_tags(), want, "{pruned:?}");
    assert_eq!(pruned.removed.len(), 2, "{pruned:?}");
    assert!(pruned.problems.is_empty(), "{pruned:?}");
    // The image Compose runs is untouched.
    assert!(app.image_id(&app.image_repo()).is_some());
    // Pruning again changes nothing.
    let again = runtime.prune_images(&[commits[1].clone()]).unwrap();
    assert!(again.removed.is_empty(), "{again:?}");
    assert_eq!(app.commit_tags(), want);
}

#[test]
fn command_runtime_builds_stops_and_starts_with_shell_commands() {
    let app = App::new(
        "[runtime]\nbuild = \"echo build >> events.log\"\nstop = \"echo stop >> events.log\"\nstart = \"echo start >> events.log\"\n\n[database]\nmode = \"direct\"\n",
    );
    let loaded = stablehand::config::load(&app.path().join("stablehand.toml")).unwrap();
    let runtime = Runtime::load(&loaded).unwrap();
    assert_eq!(runtime.kind_name(), "command");
    runtime.build("0123456789abcdef").unwrap();
    assert!(runtime.stop_app().unwrap());
    runtime.start_app().unwrap();
    let switched = runtime.switch_to("0123456789abcdef").unwrap();
    assert!(
        switched.rebuilt,
        "a command runtime always builds on a switch"
    );
    let log = fs::read_to_string(app.path().join("events.log")).unwrap();
    assert_eq!(log, "build\nstop\nstart\nbuild\nstart\n");
}

#[test]
fn a_service_list_naming_an_unknown_service_is_a_clear_error() {
    let Some(app) = BuiltApp::new("services = [\"web\", \"wbe\"]\n") else {
        return;
    };
    let loaded = stablehand::config::load(&app.app.path().join("stablehand.toml")).unwrap();
    let err = Runtime::load(&loaded)
        .err()
        .expect("unknown service")
        .to_string();
    assert!(err.contains("\"wbe\""), "{err}");
    assert!(
        err.contains("web, sidecar") || err.contains("sidecar, web"),
        "{err}"
    );
}
