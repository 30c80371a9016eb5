//! `stablehand serve`: the token rule on a non-loopback bind, the scheduler running real
//! backups (and surviving a failing one), and (from the deploy tests) the dashboard in
//! headless Chromium.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{missing, pg, wait_for, App};

/// A running `stablehand serve`; killed on drop. Its stderr lines are collected.
pub struct Server {
    child: Child,
    pub base: String,
    pub lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `stablehand serve --listen ADDR` with `cmd`'s directory and environment.
    pub fn start(mut cmd: Command, listen: &str) -> Server {
        let mut child = cmd
            .args(["serve", "--listen", listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("serve never said where it listens: {seen:?}"));
            if let Some(addr) = line.split("listening on http://").nth(1) {
                break addr.trim().to_string();
            }
            seen.push(line);
        };
        let port = addr.rsplit(':').next().unwrap();
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            lines: rx,
        }
    }

    /// GET `path`: (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = ureq::get(&format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium (ENVIRONMENT.md), or None outside CI when it is missing.
pub fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        missing(
            "Chromium",
            "no /usr/bin/chromium (apt-get install chromium)",
        );
    }
    found
}

/// A screenshot of `url` at `width`x`height` into `out`; returns the DOM Chromium saw.
pub fn screenshot(chromium: &Path, url: &str, width: u32, height: u32, out: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    };
    let mut shot = Command::new(chromium);
    base(&mut shot);
    let status = shot
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(url)
        .status()
        .unwrap();
    assert!(status.success(), "chromium --screenshot");
    let mut dom = Command::new(chromium);
    base(&mut dom);
    let out = dom.arg("--dump-dom").arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_non_loopback_bind_needs_a_token_on_every_request() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let port = crate::support::free_port();

    // Without a token configured, serve refuses to listen beyond loopback.
    let app = App::direct(&pg.url(&db), "");
    let out = app
        .std_cmd()
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refuses to listen on 0.0.0.0"), "{stderr}");

    let mut app = App::direct(&pg.url(&db), "\n[serve]\ntoken_env = \"DASH_TOKEN\"\n");
    app.env
        .push(("DASH_TOKEN".into(), "t0ken-for-tests".into()));
    app.json(&["backup"]);
    let server = Server::start(app.std_cmd(), &format!("0.0.0.0:{port}"));
    for path in ["/", "/metrics", "/api/status"] {
        let (code, body) = server.get(path, None);
        assert_eq!(code, 401, "{path} without the token: {body}");
        assert_eq!(server.get(path, Some("wrong-token-xx")).0, 401, "{path}");
        let (code, body) = server.get(path, Some("t0ken-for-tests"));
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, metrics) = server.get("/metrics", Some("t0ken-for-tests"));
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses");
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "stablehand_backup_last_size_bytes"));
    let (_, status) = server.get("/api/status", Some("t0ken-for-tests"));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"]["backups"], 1, "{status:#}");
}

#[test]
fn the_scheduler_runs_backups_on_time_and_survives_a_failing_one() {
    let Some(pg) = pg() else { return };
    let db = pg.sample_db();
    let app = App::direct(
        &pg.url(&db),
        "\n[schedule]\nbackup = \"*/3 * * * * *\"\n\n[backup]\nkeep_last = 50\n",
    );
    let mut server = Server::start(app.std_cmd(), "127.0.0.1:0");
    let backups = || {
        std::fs::read_dir(app.backup_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(30), || (backups() >= 2).then_some(()))
        .expect("two scheduled backups within 30 s");
    let listing = app.json(&["backup", "list"]);
    assert_eq!(listing["backups"][0]["label"], "scheduled", "{listing:#}");

    // The database goes away: the next job fails, the scheduler carries on.
    pg.psql("postgres", &format!("drop database {db} with (force)"));
    let failed = wait_for(Duration::from_secs(30), || {
        server
            .lines
            .try_iter()
            .find(|l| l.contains("scheduled backup FAILED"))
    });
    assert!(failed.is_some(), "a failed job is logged");
    std::thread::sleep(Duration::from_secs(4));
    assert!(server.alive(), "serve survives a failing job");
    let again = wait_for(Duration::from_secs(15), || {
        server
            .lines
            .try_iter()
            .find(|l| l.contains("running scheduled backup"))
    });
    assert!(again.is_some(), "and runs the next one");
}
