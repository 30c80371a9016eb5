//! Two releases of a compose service at once (issue 18): a colour of the demo app's web
//! service started beside the running release on the real Docker engine, from the file
//! generated out of Compose's resolved config, serving on its own port; then removed,
//! leaving the running release untouched.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use stablehand::runtime::colour::{self, Colour, Port};
use stablehand::runtime::Runtime;

use crate::deploy::Stack;
use crate::support::{free_port, git, wait_for};

fn status(port: u16) -> Option<u16> {
    match ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(2))
        .call()
    {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(_) => None,
    }
}

fn containers(project: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=com.docker.compose.project={project}"))
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_colour_serves_beside_the_running_release_and_goes_without_touching_it() {
    let Some(s) = Stack::fast_deployed() else {
        return;
    };
    let loaded = stablehand::config::load(&s.app().join("stablehand.toml")).unwrap();
    let Runtime::Compose(app) = Runtime::load(&loaded).unwrap() else {
        panic!("the demo app runs on Compose");
    };
    let head = git(&s.app(), &["rev-parse", "HEAD"]);
    let image =
        stablehand::runtime::images::commit_tag(&app.spec.service("web").unwrap().image, &head);
    let port = free_port();
    let blue = Colour {
        name: "blue".into(),
        main_project: s.project.clone(),
        port,
        how: Port::Env("WEB_PORT".into()),
        images: BTreeMap::from([("web".to_string(), image)]),
    };
    let main_before = containers(&s.project);
    assert_eq!(main_before.len(), 2, "postgres and web");

    colour::start(&app.compose, &loaded.state_dir(), &blue).unwrap();
    wait_for(Duration::from_secs(60), || {
        (status(port) == Some(200)).then_some(())
    })
    .expect("the blue release serves on its own port");
    assert_eq!(
        s.health_status(),
        Some(200),
        "the running release still serves"
    );
    assert_eq!(
        containers(&blue.project()).len(),
        1,
        "only the app service runs in the colour"
    );
    let file = colour::file_path(&loaded.state_dir(), "blue");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the file holds interpolated values");

    colour::remove(&app.compose, &loaded.state_dir(), &blue).unwrap();
    assert!(containers(&blue.project()).is_empty());
    assert_eq!(status(port), None, "nothing serves on the colour's port");
    assert!(!file.exists());
    assert_eq!(
        containers(&s.project),
        main_before,
        "the running release was not touched"
    );
    assert_eq!(s.health_status(), Some(200));
}
