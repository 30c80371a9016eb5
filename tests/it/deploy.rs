//! The guarded deploy end to end, through the real binary: a git work tree cloned from a
//! bare remote, PostgreSQL in a compose service, and a web app built from a Dockerfile
//! whose entrypoint applies its migrations into `_prisma_migrations` (as `prisma migrate
//! deploy` does when the backend starts) and then serves `/health` with httpd: the demo
//! app of examples/demo-app. A broken release ships without its health file (404).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    busybox_image, docker_available, free_port, git, postgres_ids, psql_at,
    remove_image_repository, unique, wait_for, PG_BIN,
};

/// The stack: `remote.git` (bare), `dev/` (where releases are authored and pushed),
/// `app/` (the deploy work tree, with stablehand.toml), `pgdata/` beside them.
pub struct Stack {
    root: tempfile::TempDir,
    /// Extra environment for stablehand.
    pub env: Vec<(String, String)>,
    pub project: String,
    pub db_port: u16,
    pub web_port: u16,
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Gate timing for tests that run many deploys.
pub const FAST_HEALTH: &str =
    "consecutive = 1\nstable_for = \"1s\"\ntimeout = \"5s\"\ninterval = \"200ms\"\n";

impl Stack {
    /// `with_health(FAST_HEALTH, extra_config)`.
    pub fn fast(extra_config: &str) -> Option<Stack> {
        Stack::with_health(FAST_HEALTH, extra_config)
    }

    /// A `fast` stack with v1 deployed and stable.
    pub fn fast_deployed() -> Option<Stack> {
        let s = Stack::fast("")?;
        let (code, v) = s.deploy(&[]);
        assert_eq!(code, 0, "{v:#}");
        Some(s)
    }

    /// `stablehand --json deploy` with `signal` (KILL when empty; see the failpoints)
    /// sent at `point`: the exit code (-1 when killed), the outcome (Null when there is
    /// none) and stderr.
    pub fn deploy_at_failpoint(
        &self,
        point: &str,
        signal: &str,
    ) -> (i32, serde_json::Value, String) {
        let out = self
            .stablehand_cmd(&["--json", "deploy"])
            .env("STABLEHAND_FAILPOINT", point)
            .env("STABLEHAND_FAILPOINT_SIGNAL", signal)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), v, stderr)
    }

    /// Builds the repositories and starts PostgreSQL (with 100 existing messages);
    /// `extra_config` is appended to stablehand.toml. The web app is not running yet.
    pub fn new(extra_config: &str) -> Option<Stack> {
        Stack::with_health(
            "consecutive = 2\nstable_for = \"2s\"\ntimeout = \"10s\"\ninterval = \"300ms\"\n",
            extra_config,
        )
    }

    /// `new` with the gate's timing (`[health]` keys besides the probe) given.
    pub fn with_health(health: &str, extra_config: &str) -> Option<Stack> {
        if !docker_available() {
            return None;
        }
        let image = busybox_image();
        let root = tempfile::Builder::new()
            .prefix("stablehand-deploy")
            .tempdir()
            .unwrap();
        let stack = Stack {
            root,
            env: Vec::new(),
            project: unique("shdeploy").replace('_', ""),
            db_port: free_port(),
            web_port: free_port(),
        };
        let r = stack.root.path();
        let (uid, gid) = postgres_ids();
        fs::create_dir(r.join("pgdata")).unwrap();
        nix::unistd::chown(&r.join("pgdata"), Some(uid.into()), Some(gid.into())).unwrap();
        fs::create_dir(r.join("flags")).unwrap();
        git(r, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(r, &["clone", "-q", "remote.git", "dev"]);
        let dev = stack.dev();
        let (db_port, web_port, project) = (stack.db_port, stack.web_port, &stack.project);
        // The demo app (examples/demo-app): its compose file, Dockerfile and app/.
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-app");
        let compose = fs::read_to_string(example.join("docker-compose.yml.in"))
            .unwrap()
            .replace("@BASE_IMAGE@", image)
            .replace("@PG_UID@", &uid.to_string())
            .replace("@PG_GID@", &gid.to_string())
            .replace("@DB_PORT@", &db_port.to_string())
            .replace("@WEB_PORT@", &web_port.to_string());
        fs::write(dev.join("docker-compose.yml"), compose).unwrap();
        // The demo's Dockerfile with one layer of this stack's own right after FROM, so
        // no build-cache image is shared between stacks: Docker removes the untagged
        // parents of an image it removes, and a stack tearing down (or pruning) would
        // otherwise delete a cached layer another stack's build is about to use
        // ("unable to find image sha256:...").
        let dockerfile = fs::read_to_string(example.join("Dockerfile")).unwrap();
        let (from, rest) = dockerfile.split_once('\n').unwrap();
        fs::write(
            dev.join("Dockerfile"),
            format!("{from}\nCOPY stack-id.txt /stack-id.txt\n{rest}"),
        )
        .unwrap();
        fs::write(dev.join("stack-id.txt"), format!("{project}\n")).unwrap();
        copy_dir(&example.join("app"), &dev.join("app"));
        copy_dir(&example.join("prisma"), &dev.join("prisma"));
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed (make test installs it)");
        fs::copy(busybox, dev.join("busybox")).unwrap();
        fs::write(dev.join(".gitignore"), "backups/\n.stablehand/\n").unwrap();
        fs::write(
            dev.join("stablehand.toml"),
            format!(
                r#"[runtime]
project = "{project}"

[health]
containers = ["web"]
{health}[[health.http]]
url = "http://127.0.0.1:{web_port}/health"
timeout = "1s"

[database]
mode = "compose"
service = "postgres"
user = "app"
name = "appdb"
{extra_config}"#
            ),
        )
        .unwrap();
        stack.commit("v1: messages");
        git(r, &["clone", "-q", "remote.git", "app"]);

        let up = stack.compose(&["up", "-d", "postgres"]).status().unwrap();
        assert!(up.success(), "compose up postgres");
        wait_for(Duration::from_secs(90), || {
            Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &db_port.to_string()])
                .status()
                .unwrap()
                .success()
                .then_some(())
        })
        .expect("PostgreSQL in the compose service became ready");
        stack.psql("postgres", "create database appdb");
        // Production data that predates stablehand.
        stack.psql(
            "appdb",
            "create table messages (id serial primary key, body text not null); \
             insert into messages (body) select 'old ' || g from generate_series(1, 100) g",
        );
        Some(stack)
    }

    pub fn dev(&self) -> PathBuf {
        self.root.path().join("dev")
    }

    pub fn app(&self) -> PathBuf {
        self.root.path().join("app")
    }

    /// Adds `prisma/migrations/<name>/migration.sql` to the next release.
    pub fn add_migration(&self, name: &str, sql: &str) {
        let dir = self.dev().join("prisma/migrations").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("migration.sql"), sql).unwrap();
    }

    /// Adds the migration's `down.sql` (Prisma's documented down migration).
    pub fn add_down(&self, name: &str, sql: &str) {
        let dir = self.dev().join("prisma/migrations").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("down.sql"), sql).unwrap();
    }

    /// Ships a release without its health file (or with it again).
    pub fn set_healthy(&self, healthy: bool) {
        let f = self.dev().join("app/www/health");
        if healthy {
            fs::write(f, "ok\n").unwrap();
        } else {
            let _ = fs::remove_file(f);
        }
    }

    /// Commits everything in dev/ and pushes; returns the sha.
    pub fn commit(&self, message: &str) -> String {
        let dev = self.dev();
        // A file that changes every release: each one builds a distinct image.
        fs::write(dev.join("app/www/version"), format!("{message}\n")).unwrap();
        git(&dev, &["add", "-A"]);
        git(&dev, &["commit", "-q", "-m", message]);
        git(&dev, &["push", "-q", "origin", "main"]);
        git(&dev, &["rev-parse", "HEAD"])
    }

    pub fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &self.project])
            .args(args)
            .current_dir(self.app_or_dev())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn app_or_dev(&self) -> PathBuf {
        if self.app().join("docker-compose.yml").exists() {
            self.app()
        } else {
            self.dev()
        }
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(self.db_port, "app", db, sql)
    }

    pub fn count(&self, sql: &str) -> u64 {
        self.psql("appdb", sql).parse().unwrap()
    }

    pub fn table_exists(&self, db: &str, table: &str) -> bool {
        self.psql(db, &format!("select to_regclass('{table}') is not null")) == "t"
    }

    /// Databases whose names start with `prefix`.
    pub fn databases_like(&self, prefix: &str) -> Vec<String> {
        let out = self.psql(
            "postgres",
            &format!("select datname from pg_database where datname like '{prefix}%' order by 1"),
        );
        out.lines().map(str::to_string).collect()
    }

    /// `stablehand ARGS` in the app directory; returns (exit code, stdout JSON or text, stderr).
    pub fn stablehand(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.stablehand_cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn stablehand_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stablehand"));
        c.args(args)
            .current_dir(self.app())
            .env_remove("STABLEHAND_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_STEP_SUMMARY")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `stablehand --json deploy ARGS`: exit code and the outcome.
    pub fn deploy(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json", "deploy"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = self.stablehand(&all);
        let v = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
        (code, v)
    }

    /// `stablehand --json deploy`, running `sql` once the deploy reaches its health gate
    /// (the new release is serving: these are writes made during the deploy).
    pub fn deploy_writing_during_gate(&self, sql: &str) -> (i32, serde_json::Value) {
        self.deploy_writing_during_gate_once("select true", sql)
    }

    /// `deploy_writing_during_gate`, once `ready` (a boolean query) also holds: the app
    /// applies its migrations when it starts, so a new table appears during the gate.
    pub fn deploy_writing_during_gate_once(
        &self,
        ready: &str,
        sql: &str,
    ) -> (i32, serde_json::Value) {
        let (code, v, _) = self.deploy_during_gate(|| {
            wait_for(Duration::from_secs(60), || {
                (self.psql("appdb", ready) == "t").then_some(())
            })
            .expect("the new release's schema is in place");
            self.psql("appdb", sql);
        });
        (code, v)
    }

    /// `stablehand --json deploy`, running `at_gate` once the deploy reaches its health
    /// gate; returns the exit code, the outcome and stderr.
    pub fn deploy_during_gate(&self, at_gate: impl FnOnce()) -> (i32, serde_json::Value, String) {
        let child = self
            .stablehand_cmd(&["--json", "deploy"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let journal = self.app().join(".stablehand/journal.json");
        wait_for(Duration::from_secs(120), || {
            let j = fs::read_to_string(&journal).ok()?;
            j.contains("\"name\": \"gate\"").then_some(())
        })
        .expect("the deploy reached its gate");
        at_gate();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap_or(-1), v, stderr)
    }

    pub fn head(&self) -> String {
        git(&self.app(), &["rev-parse", "HEAD"])
    }

    /// Where latest-stable points on the remote.
    pub fn remote_stable(&self) -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "-q", "--verify", "latest-stable^{commit}"])
            .current_dir(self.root.path().join("remote.git"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// What the app answers on /health right now.
    pub fn health_status(&self) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}/health", self.web_port);
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(r) => Some(r.status()),
            Err(ureq::Error::Status(code, _)) => Some(code),
            Err(_) => None,
        }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "2"]).status();
        remove_image_repository(&format!("{}_web", self.project));
    }
}

/// The outcome's steps as `name:status`.
pub fn steps(v: &serde_json::Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}:{}",
                        s["name"].as_str().unwrap(),
                        s["status"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_good_deploy_is_backed_up_gated_and_marked_stable() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);

    let (code, plan) = s.deploy(&["--dry-run"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["outcome"], "planned");
    assert_eq!(plan["plan"]["target"], v1);
    assert!(
        !s.path().join("app/.stablehand/history.jsonl").exists(),
        "a dry run records nothing"
    );

    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["outcome"], "deployed");
    assert_eq!(
        steps(&v),
        [
            "checkout:done",
            "build:done",
            "backup:done",
            "stop:done",
            "start:done",
            "gate:done",
            "mark_stable:done",
            "prune:done"
        ]
    );
    assert_eq!(
        s.remote_stable().as_deref(),
        Some(v1.as_str()),
        "latest-stable pushed"
    );
    let backup = v["backup"].as_str().unwrap();
    let tag_message = git(
        &s.app(),
        &[
            "tag",
            "-l",
            "--format=%(contents)",
            v["stable_tag"].as_str().unwrap(),
        ],
    );
    assert!(tag_message.contains(backup), "{tag_message}");
    assert_eq!(s.health_status(), Some(200));
    assert_eq!(s.count("select count(*) from messages"), 100);
    assert!(
        !s.app().join(".stablehand/journal.json").exists(),
        "the journal is finished"
    );

    let (code, history, _) = s.stablehand(&["--json", "history"]);
    assert_eq!(code, 0);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["outcome"], "deployed");
    assert_eq!(history[0]["backup"], backup);
    let (code, status, _) = s.stablehand(&["status"]);
    assert_eq!(code, 0, "{status}");
    assert!(
        status.contains(&format!("latest-stable:   {}", &v1[..12])),
        "{status}"
    );
}

#[test]
fn a_failing_deploy_with_a_migration_gets_code_and_database_back() {
    let Some(mut s) = Stack::new(
        "\n[notify]\nwebhook_url_env = \"DEPLOY_WEBHOOK_URL\"\n\n[alerts]\nmax_backup_age = \"5s\"\n",
    ) else {
        return;
    };
    let rx = crate::notify::Receiver::start(crate::notify::Mode::Accept);
    let outputs = s.path().join("github-output");
    let summary = s.path().join("github-summary.md");
    s.env
        .push(("DEPLOY_WEBHOOK_URL".into(), format!("{}/deploys", rx.base)));
    s.env
        .push(("GITHUB_OUTPUT".into(), outputs.display().to_string()));
    s.env
        .push(("GITHUB_STEP_SUMMARY".into(), summary.display().to_string()));
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    s.psql(
        "appdb",
        "insert into messages (body) values ('written before v2')",
    );

    s.add_migration("002_audit", "create table audit (id serial primary key, what text); alter table messages add column flagged boolean;");
    s.set_healthy(false);
    let v2 = s.commit("v2: audit table, broken health");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["outcome"], "rolled_back");
    let rb = &v["rollback"];
    assert_eq!(rb["failed_commit"], v2);
    assert_eq!(rb["target"], v1);
    assert_eq!(rb["db"]["action"], "restore", "{rb:#}");
    assert!(
        rb["db"]["reason"].as_str().unwrap().contains("002_audit"),
        "{rb:#}"
    );
    assert_eq!(rb["reverted_commits"][0]["sha"], v2);

    // Code and database are v1's again; the rows from before the backup are there.
    assert_eq!(s.head(), v1);
    assert!(
        !s.table_exists("appdb", "audit"),
        "the migration's table is gone"
    );
    assert_eq!(s.count("select count(*) from messages"), 101);
    assert_eq!(
        s.count("select count(*) from messages where body = 'written before v2'"),
        1
    );
    // The failed database is kept, with the migration in it.
    let kept = rb["kept_database"].as_str().unwrap();
    assert!(kept.starts_with("appdb__failed_"), "{kept}");
    assert!(s.table_exists(kept, "audit"));
    assert_eq!(s.health_status(), Some(200));
    assert_eq!(
        s.remote_stable().as_deref(),
        Some(v1.as_str()),
        "latest-stable did not move"
    );
    let (_, history, _) = s.stablehand(&["--json", "history"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["outcome"], "rolled_back");
    assert_eq!(history[0]["failed_commit"], v2);
    assert_eq!(history[0]["db_action"], "restore");

    // Announced: the webhook got the deploy and the rollback, CI got its outputs.
    let events = rx.bodies("/deploys");
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["event"], "deploy_succeeded");
    let rollback = &events[1];
    assert_eq!(rollback["event"], "rollback_succeeded");
    assert_eq!(rollback["failed_commit"], v2);
    assert_eq!(rollback["to"], v1);
    assert_eq!(rollback["database"]["action"], "restore");
    assert_eq!(rollback["reverted_commits"][0]["sha"], v2);
    assert_eq!(
        history[0]["notifications"][0]["ok"], true,
        "{:#}",
        history[0]
    );
    let out = fs::read_to_string(&outputs).unwrap();
    assert!(out.contains("outcome=rolled_back"), "{out}");
    assert!(out.contains(&format!("deployed_commit={v1}")), "{out}");
    let md = fs::read_to_string(&summary).unwrap();
    assert!(md.contains("## stablehand: rollback succeeded"), "{md}");
    assert!(md.contains(&format!("`{}`", &v2[..12])), "{md}");

    // The dashboard, over this real history and these real backups, in headless
    // Chromium: the stable release, the rollback in the timeline, a stale-backup alert
    // (alerts.max_backup_age = 5s).
    std::thread::sleep(Duration::from_secs(6));
    let server = crate::serve::Server::start(s.stablehand_cmd(&[]), "127.0.0.1:0");
    let (code, html) = server.get("/", None);
    assert_eq!(code, 200, "{html}");
    assert!(html.contains(&v1[..12]), "the stable release is shown");
    assert!(
        html.contains("rolled back"),
        "the rollback is in the timeline"
    );
    assert!(
        html.contains("backup_stale"),
        "the stale-backup alert is shown"
    );
    assert!(
        html.contains("appdb__failed_"),
        "the kept database is listed"
    );
    if let Some(chromium) = crate::serve::chromium() {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        fs::create_dir_all(&out).unwrap();
        for (name, w, h) in [("desktop", 1280, 1100), ("phone", 390, 1600)] {
            let png = out.join(format!("dashboard-{name}.png"));
            let dom = crate::serve::screenshot(&chromium, &format!("{}/", server.base), w, h, &png);
            assert!(
                dom.contains("rolled back") && dom.contains("backup_stale"),
                "{dom}"
            );
            let size = fs::metadata(&png).unwrap().len();
            assert!(
                size > 10_000,
                "{} is a real picture ({size} bytes)",
                png.display()
            );
            eprintln!("dashboard screenshot: {}", png.display());
        }
    }
}

#[test]
fn a_failing_deploy_without_a_migration_leaves_the_database_and_its_new_rows() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    s.set_healthy(false);
    s.commit("v2: broken health, no migration");

    // Rows written while the new release runs (after the backup): they must survive.
    let (code, v) = s.deploy_writing_during_gate(
        "insert into messages (body) select 'during the deploy ' || g from generate_series(1, 5) g",
    );
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["db"]["action"], "none", "{v:#}");
    assert!(v["rollback"]["db"]["reason"]
        .as_str()
        .unwrap()
        .contains("applied no migration"));
    assert_eq!(
        s.count("select count(*) from messages where body like 'during the deploy%'"),
        5
    );
    assert_eq!(s.head(), v1);
    assert!(
        s.databases_like("appdb__failed_").is_empty(),
        "nothing was kept aside"
    );
    assert_eq!(s.health_status(), Some(200));
}

#[test]
fn failures_in_a_row_always_return_to_the_first_stable_release() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    s.set_healthy(false);
    for n in 2..=4 {
        s.commit(&format!("v{n}: broken"));
        let (code, v) = s.deploy(&[]);
        assert_eq!(code, 11, "v{n}: {v:#}");
        assert_eq!(
            v["rollback"]["target"], v1,
            "v{n} goes back to v1, never to a failed release"
        );
        assert_eq!(s.head(), v1);
    }
    // v5 fixes it: the stable release moves.
    s.set_healthy(true);
    let v5 = s.commit("v5: fixed");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(s.remote_stable().as_deref(), Some(v5.as_str()));
}

#[test]
fn without_a_stable_release_the_rollback_returns_to_the_commit_running_before() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    // v1 runs, started by hand before stablehand (no stable tag).
    assert!(s
        .compose(&["up", "-d", "--build", "web"])
        .status()
        .unwrap()
        .success());
    wait_for(Duration::from_secs(30), || {
        (s.health_status() == Some(200)).then_some(())
    })
    .expect("v1 serves");
    s.set_healthy(false);
    s.commit("v2: broken");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], v1);
    assert!(v["rollback"]["target_reason"]
        .as_str()
        .unwrap()
        .contains("no stable release yet"));
    assert_eq!(
        v["rollback"]["images"][0]["source"], "retained",
        "v1's running image was kept: {v:#}"
    );
    assert_eq!(s.head(), v1);
    assert_eq!(s.health_status(), Some(200));
    assert_eq!(s.remote_stable(), None);
}

#[test]
fn the_stable_release_itself_failing_needs_manual_intervention_and_destroys_nothing() {
    let Some(mut s) = Stack::new("\n[notify]\nslack_webhook_env = \"SLACK_WEBHOOK_URL\"\n") else {
        return;
    };
    let rx = crate::notify::Receiver::start(crate::notify::Mode::Accept);
    s.env
        .push(("SLACK_WEBHOOK_URL".into(), format!("{}/slack", rx.base)));
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    // The environment breaks under the stable release: redeploying it fails its gate.
    fs::write(s.path().join("flags/broken"), "").unwrap();
    let (code, v) = s.deploy(&["--ref", &v1]);
    assert_eq!(code, 12, "{v:#}");
    assert_eq!(v["outcome"], "rollback_failed");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("MANUAL INTERVENTION REQUIRED"),
        "{message}"
    );
    assert!(message.contains("stable release"), "{message}");
    assert_eq!(s.head(), v1);
    assert_eq!(
        s.count("select count(*) from messages"),
        100,
        "the database is untouched"
    );
    assert!(s.databases_like("appdb__failed_").is_empty());
    // Slack heard it: the deploy, then the manual-intervention alarm.
    let slack = rx.bodies("/slack");
    assert_eq!(slack.len(), 2, "{slack:#?}");
    let text = slack[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Rollback failed: manual intervention required"),
        "{text}"
    );
}

#[test]
fn a_second_deploy_while_one_runs_is_refused_with_exit_10() {
    let Some(s) = Stack::new("") else { return };
    let mut first = s
        .stablehand_cmd(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = s.app().join(".stablehand/journal.json");
    wait_for(Duration::from_secs(60), || journal.exists().then_some(()))
        .expect("the first deploy started");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 10, "{v:#}");
    assert_eq!(v["outcome"], "refused");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {}", first.id())),
        "names the holder: {message}"
    );
    assert!(message.contains("deploy"), "{message}");
    assert!(first.wait().unwrap().success(), "the first deploy finished");
}

#[test]
fn a_failed_backup_refuses_the_deploy_and_changes_nothing() {
    // A backup smaller than min_size does not count: a real failure of the backup step.
    let Some(s) = Stack::new("\n[backup]\nmin_size = \"1GiB\"\n") else {
        return;
    };
    let before = s.head();
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 10, "{v:#}");
    assert_eq!(v["outcome"], "refused");
    assert!(
        v["message"].as_str().unwrap().contains("before any change"),
        "{v:#}"
    );
    assert_eq!(s.head(), before);
    assert_eq!(s.remote_stable(), None);
    assert!(s.health_status().is_none(), "the app was never started");
    let (_, history, _) = s.stablehand(&["--json", "history"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[0]["outcome"], "refused");
}

#[test]
fn snapshot_mode_rolls_the_database_back_by_rename_in_under_a_second() {
    let Some(s) = Stack::new("snapshot = true\n") else {
        return;
    };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    assert!(
        s.databases_like("appdb__snap_").is_empty(),
        "a passed deploy drops its snapshot"
    );
    s.add_migration("002_audit", "create table audit (id serial primary key);");
    s.set_healthy(false);
    s.commit("v2: broken with a migration");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    let rb = &v["rollback"];
    assert_eq!(rb["db"]["action"], "swap_snapshot", "{rb:#}");
    let swap = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "database_swap")
        .expect("a database_swap step");
    assert!(
        swap["took_ms"].as_u64().unwrap() < 1000,
        "database part {swap}"
    );
    assert!(!s.table_exists("appdb", "audit"));
    assert_eq!(s.count("select count(*) from messages"), 100);
    assert_eq!(s.head(), v1);
    assert!(s.table_exists(rb["kept_database"].as_str().unwrap(), "audit"));
}

#[test]
fn a_rollback_by_hand_returns_code_and_database_to_the_release_asked_for() {
    let Some(s) = Stack::new("") else { return };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    assert_eq!(s.deploy(&[]).0, 0);
    s.add_migration("002_audit", "create table audit (id serial primary key);");
    let v2 = s.commit("v2: healthy, with a migration");
    assert_eq!(s.deploy(&[]).0, 0);
    assert!(s.table_exists("appdb", "audit"));

    // No terminal and no --yes: refused, nothing changed.
    let (code, _, stderr) = s.stablehand(&["rollback", "--to", &v1]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(s.head(), v2);
    // Without --to right after a good deploy, the running commit IS latest-stable:
    // nowhere to go is a refusal (10), and nothing is stopped for it.
    let (code, stdout, stderr) = s.stablehand(&["rollback", "--yes"]);
    assert_eq!(code, 10, "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("is latest-stable") && said.contains("--to <commit>"),
        "{said}"
    );
    assert_eq!(s.head(), v2);
    assert_eq!(s.health_status(), Some(200), "the app kept running");

    let (code, stdout, stderr) = s.stablehand(&["--json", "rollback", "--to", &v1, "--yes"]);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["target"], v1);
    assert_eq!(v["rollback"]["db"]["action"], "restore", "{v:#}");
    assert_eq!(s.head(), v1);
    assert!(!s.table_exists("appdb", "audit"));
    assert_eq!(s.count("select count(*) from messages"), 100);
    assert_eq!(s.health_status(), Some(200));
}

#[test]
fn a_failing_migrate_command_rolls_back() {
    let Some(s) = Stack::new("migrate_command = \"echo migrating; exit 3\"\n") else {
        return;
    };
    let before = s.head();
    let (code, v) = s.deploy(&[]);
    // Production was changed (the app was stopped): a rollback, not a refusal. There is
    // no stable release yet and nothing ran before: the code returns to where it was.
    assert!(code == 11 || code == 12, "{v:#}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("database.migrate_command"), "{message}");
    assert!(
        message.contains("exit status 3") || message.contains("exited with status 3"),
        "{message}"
    );
    assert_eq!(s.head(), before);
    assert_eq!(s.count("select count(*) from messages"), 100);
}

#[test]
fn a_deploy_whose_backup_cannot_go_offsite_goes_on_and_says_so() {
    // A remote nothing listens on: the upload fails fast (connection refused, retried).
    let dead = crate::support::free_port();
    let Some(mut s) = Stack::new(&format!(
        "[[backup.remote]]\nname = \"s3\"\nurl = \"s3://nowhere/app\"\nendpoint = \"http://127.0.0.1:{dead}\"\nallow_http = true\ntimeout = \"2s\"\n"
    )) else {
        return;
    };
    s.env.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    s.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "testing".into()));
    let (code, v) = s.deploy(&[]);
    assert_eq!(
        code, 0,
        "remote_required = false: the deploy goes on: {v:#}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("stored locally only") && message.contains("backup sync"),
        "{message}"
    );
    let history = fs::read_to_string(s.app().join(".stablehand/history.jsonl")).unwrap();
    assert!(history.contains("stored locally only"), "{history}");
    let counters = fs::read_to_string(s.app().join(".stablehand/counters.json")).unwrap();
    assert!(counters.contains("\"upload_failures\":1"), "{counters}");
}
