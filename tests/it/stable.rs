//! Stable releases against real git: a work repository and a bare remote in temp dirs,
//! tags made, moved and pushed, seen from a second clone; rejected pushes, missing
//! remotes, dirty trees, detached HEADs, shallow clones and environments.

use std::fs;
use std::path::{Path, PathBuf};

use predicates::prelude::*;
use stablehand::config::GitConfig;
use stablehand::git::Repo;

use crate::support::{git, write_script};

const CONFIG: &str = "[database]\nmode = \"direct\"\n";

/// A bare remote and a work clone with one pushed commit.
struct Fixture {
    _tmp: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
}

impl Fixture {
    fn new(config: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        let work = tmp.path().join("work");
        git(
            tmp.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                remote.to_str().unwrap(),
            ],
        );
        git(
            tmp.path(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        fs::write(work.join("stablehand.toml"), config).unwrap();
        let f = Fixture {
            _tmp: tmp,
            remote,
            work,
        };
        f.commit("v1.0");
        git(&f.work, &["push", "-q", "origin", "main"]);
        f
    }

    /// Commits a change named `version` and returns its sha.
    fn commit(&self, version: &str) -> String {
        fs::write(self.work.join("VERSION"), version).unwrap();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("release {version}")],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn cmd(&self, dir: &Path) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("stablehand").unwrap();
        c.current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .timeout(std::time::Duration::from_secs(60));
        c
    }

    fn stablehand(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd(&self.work).args(args).assert()
    }

    fn json(&self, dir: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.cmd(dir).arg("--json").args(args).output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    fn remote_tags(&self) -> String {
        git(
            &self.remote,
            &[
                "for-each-ref",
                "--format=%(refname:strip=2) %(*objectname)",
                "refs/tags",
            ],
        )
    }
}

#[test]
fn mark_pushes_both_tags_and_a_second_clone_sees_latest_stable_move() {
    let f = Fixture::new(CONFIG);
    let v1 = git(&f.work, &["rev-parse", "HEAD"]);
    let marked = f.json(
        &f.work,
        &[
            "stable",
            "mark",
            "--backup",
            "pre-deploy_20261129_101010_abc1234",
        ],
    );
    assert_eq!(marked["commit"], v1);
    assert_eq!(marked["pushed"], true);
    let tag = marked["tag"].as_str().unwrap().to_string();
    assert!(
        tag.starts_with("stable-") && tag.len() == "stable-YYYYMMDD-HHMMSS".len(),
        "{tag}"
    );
    let remote = f.remote_tags();
    assert!(remote.contains(&format!("{tag} {v1}")), "{remote}");
    assert!(remote.contains(&format!("latest-stable {v1}")), "{remote}");
    // The annotated tag records commit, time and backup.
    let message = git(&f.work, &["tag", "-l", "--format=%(contents)", &tag]);
    assert!(message.contains(&format!("commit: {v1}")), "{message}");
    assert!(
        message.contains("backup: pre-deploy_20261129_101010_abc1234"),
        "{message}"
    );
    assert!(message.contains("marked-at: 20"), "{message}");

    // A second clone (another server, or CI) follows the moving tag.
    let clone2 = f._tmp.path().join("clone2");
    git(
        f._tmp.path(),
        &[
            "clone",
            "-q",
            f.remote.to_str().unwrap(),
            clone2.to_str().unwrap(),
        ],
    );
    let listed = f.json(&clone2, &["stable", "list", "--fetch"]);
    assert_eq!(listed[0]["commit"], v1);
    assert_eq!(listed[0]["latest"], true);

    let v2 = f.commit("v1.1");
    git(&f.work, &["push", "-q", "origin", "main"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    f.stablehand(&["stable", "mark"])
        .success()
        .stdout(predicate::str::contains("latest-stable moved to it"));
    let listed = f.json(&clone2, &["stable", "list", "--fetch"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["commit"], v2);
    assert_eq!(listed[0]["latest"], true);
    assert_eq!(listed[1]["latest"], false);
    assert_eq!(git(&clone2, &["rev-parse", "latest-stable^{commit}"]), v2);
    f.stablehand(&["stable", "list"])
        .success()
        .stdout(predicate::str::contains("<- latest-stable"))
        .stdout(predicate::str::contains("release v1.1"));
}

#[test]
fn marks_in_the_same_second_do_not_collide() {
    let f = Fixture::new(CONFIG);
    let repo = Repo::open(&f.work, &GitConfig::default()).unwrap();
    let now: jiff::Timestamp = "2026-11-29T10:20:30Z".parse().unwrap();
    let a = repo.mark_stable("HEAD", None, now).unwrap();
    let b = repo.mark_stable("HEAD", None, now).unwrap();
    let c = repo.mark_stable("HEAD", None, now).unwrap();
    assert_eq!(a.tag, "stable-20261129-102030");
    assert_eq!(b.tag, "stable-20261129-102030-2");
    assert_eq!(c.tag, "stable-20261129-102030-3");
    let tags: Vec<String> = repo
        .stable_tags()
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(tags[0], "stable-20261129-102030-3", "{tags:?}");
}

#[test]
fn push_rejected_by_the_remote_is_reported_and_fails_but_local_tags_stay() {
    let f = Fixture::new(CONFIG);
    write_script(
        &f.remote.join("hooks/pre-receive"),
        "#!/bin/sh\necho 'tags are frozen by policy' >&2\nexit 1\n",
    );
    f.stablehand(&["stable", "mark"])
        .code(1)
        .stderr(predicate::str::contains(
            "pushing the tags to remote \"origin\" failed",
        ))
        .stderr(predicate::str::contains("tags are frozen by policy"))
        .stderr(predicate::str::contains("the tags exist locally"));
    assert!(git(&f.work, &["tag", "-l", "stable-*"]).starts_with("stable-"));
    assert!(!git(&f.work, &["tag", "-l", "latest-stable"]).is_empty());
    assert!(
        f.remote_tags().is_empty(),
        "an atomic push leaves the remote untouched"
    );
}

#[test]
fn missing_remote_fails_clearly_unless_push_is_off() {
    let f = Fixture::new(CONFIG);
    git(&f.work, &["remote", "remove", "origin"]);
    f.stablehand(&["stable", "mark"])
        .code(1)
        .stderr(predicate::str::contains("remote \"origin\""))
        .stderr(predicate::str::contains(
            "does not appear to be a git repository",
        ));
    assert!(!git(&f.work, &["tag", "-l", "latest-stable"]).is_empty());

    fs::write(
        f.work.join("stablehand.toml"),
        format!("{CONFIG}[git]\npush = false\n"),
    )
    .unwrap();
    f.stablehand(&["stable", "mark"])
        .success()
        .stderr(predicate::str::contains("not pushed: git.push = false"));
}

#[test]
fn detached_head_and_explicit_refs_can_be_marked() {
    let f = Fixture::new(CONFIG);
    let v1 = git(&f.work, &["rev-parse", "HEAD"]);
    let v2 = f.commit("v1.1");
    git(&f.work, &["checkout", "-q", "--detach", &v1]);
    assert_eq!(f.json(&f.work, &["stable", "mark"])["commit"], v1);
    assert_eq!(f.json(&f.work, &["stable", "mark", "main"])["commit"], v2);
    f.stablehand(&["stable", "mark", "no-such-ref"])
        .code(1)
        .stderr(predicate::str::contains("\"no-such-ref\" is not a commit"));
}

#[test]
fn shallow_clone_marks_fetches_and_resets() {
    let f = Fixture::new(CONFIG);
    let v1 = git(&f.work, &["rev-parse", "HEAD"]);
    f.stablehand(&["stable", "mark"]).success();
    f.commit("v1.1");
    f.commit("v1.2");
    git(&f.work, &["push", "-q", "origin", "main"]);

    let shallow = f._tmp.path().join("shallow");
    let url = format!("file://{}", f.remote.display());
    git(
        f._tmp.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    let repo = Repo::open(&shallow, &GitConfig::default()).unwrap();
    assert!(repo.is_shallow().unwrap());
    repo.fetch_tags().unwrap();
    assert_eq!(repo.latest_stable().unwrap().as_deref(), Some(v1.as_str()));
    let target = f.json(&shallow, &["stable", "target"]);
    assert_eq!(target["target"]["commit"], v1);
    repo.reset_hard(&v1, false).unwrap();
    assert_eq!(repo.head().unwrap(), v1);
    // Marking (and pushing) from a shallow clone works too.
    assert_eq!(f.json(&shallow, &["stable", "mark"])["pushed"], true);
}

#[test]
fn dirty_tree_is_refused_naming_the_files_unless_discarding() {
    let f = Fixture::new(CONFIG);
    let v1 = git(&f.work, &["rev-parse", "HEAD"]);
    f.commit("v1.1");
    fs::write(f.work.join("VERSION"), "hotfix edited on the server").unwrap();
    fs::write(f.work.join("untracked.log"), "left alone").unwrap();
    let repo = Repo::open(&f.work, &GitConfig::default()).unwrap();
    let err = repo.reset_hard(&v1, false).unwrap_err().to_string();
    assert!(
        err.contains("local changes to 1 tracked file(s): VERSION"),
        "{err}"
    );
    assert!(err.contains("git.discard_local_changes"), "{err}");
    assert_ne!(repo.head().unwrap(), v1, "nothing moved");

    repo.reset_hard(&v1, true).unwrap();
    assert_eq!(repo.head().unwrap(), v1);
    assert_eq!(fs::read_to_string(f.work.join("VERSION")).unwrap(), "v1.0");
    assert!(f.work.join("untracked.log").exists());
}

#[test]
fn environments_namespace_their_tags() {
    let f = Fixture::new(&format!("{CONFIG}[git]\nenvironment = \"production\"\n"));
    let v1 = git(&f.work, &["rev-parse", "HEAD"]);
    let marked = f.json(&f.work, &["stable", "mark"]);
    assert!(marked["tag"]
        .as_str()
        .unwrap()
        .starts_with("production/stable-"));
    assert_eq!(marked["stable_tag"], "production/latest-stable");

    let v2 = f.commit("v1.1");
    fs::write(
        f.work.join("stablehand.toml"),
        format!("{CONFIG}[git]\nenvironment = \"staging\"\n"),
    )
    .unwrap();
    f.stablehand(&["stable", "mark"]).success();
    let remote = f.remote_tags();
    assert!(
        remote.contains(&format!("production/latest-stable {v1}")),
        "{remote}"
    );
    assert!(
        remote.contains(&format!("staging/latest-stable {v2}")),
        "{remote}"
    );
    let staging = f.json(&f.work, &["stable", "list"]);
    assert_eq!(staging.as_array().unwrap().len(), 1);
    assert!(staging[0]["tag"]
        .as_str()
        .unwrap()
        .starts_with("staging/stable-"));
}

/// The proposal's table through the real CLI: v1.0 ok; v1.1..v1.4 fail -> always v1.0;
/// v1.5 ok -> the target moves; the stable release failing itself has no target.
#[test]
fn the_proposals_failure_table_through_the_cli() {
    let f = Fixture::new(CONFIG);
    let v10 = git(&f.work, &["rev-parse", "HEAD"]);
    f.stablehand(&["stable", "target"])
        .code(1)
        .stderr(predicate::str::contains("no stable release yet"));
    f.stablehand(&["stable", "mark"]).success();
    for (n, version) in ["v1.1", "v1.2", "v1.3", "v1.4"].iter().enumerate() {
        f.commit(version);
        let t = f.json(&f.work, &["stable", "target"]);
        assert_eq!(t["target"]["commit"], v10, "{version}: {t}");
        assert_eq!(t["target"]["reason"], "latest-stable");
        assert_eq!(
            t["reverted"].as_array().unwrap().len(),
            n + 1,
            "{version}: {t}"
        );
    }
    f.stablehand(&["stable", "target"])
        .success()
        .stdout(predicate::str::contains("release v1.4"))
        .stdout(predicate::str::contains("release v1.1"))
        .stdout(predicate::str::contains("commits it would revert (4)"));
    // HEAD~1 only when asked for.
    let head_1 = git(&f.work, &["rev-parse", "HEAD~1"]);
    assert_eq!(
        f.json(&f.work, &["stable", "target", "--to", "HEAD~1"])["target"]["commit"],
        head_1
    );

    let v15 = f.commit("v1.5");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    f.stablehand(&["stable", "mark"]).success();
    f.stablehand(&["stable", "target"])
        .code(1)
        .stderr(predicate::str::contains("itself is unhealthy"))
        .stderr(predicate::str::contains("manual intervention"));
    f.commit("v1.6");
    assert_eq!(
        f.json(&f.work, &["stable", "target"])["target"]["commit"],
        v15
    );
}

#[test]
fn foreign_git_environment_is_ignored_and_non_repos_are_explained() {
    let f = Fixture::new(CONFIG);
    f.cmd(&f.work)
        .env("GIT_DIR", "/nonexistent")
        .env("GIT_WORK_TREE", "/nonexistent")
        .args(["stable", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no stable releases yet"));
    let plain = tempfile::tempdir().unwrap();
    fs::write(plain.path().join("stablehand.toml"), CONFIG).unwrap();
    f.cmd(plain.path())
        .args(["stable", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not inside a git work tree"));
}
