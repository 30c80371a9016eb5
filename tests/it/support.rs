//! Test support: a throwaway PostgreSQL cluster shared by the test processes (one
//! database per test), app directories with a config, the real binary with a clean
//! environment, and a Docker engine for compose tests. A component that is missing
//! skips the test locally and fails it when `CI` is set.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// A role that must authenticate with a password (scram), to test secret handling.
pub const PW_USER: &str = "pwuser";
pub const PW_SECRET: &str = "Tr0ub4dor-not-in-argv";

/// Skips (or, under CI, fails) when the component is missing.
pub fn missing(component: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{component} is required under CI but is missing: {why}");
    }
    eprintln!("SKIPPED: {component} is missing ({why}); set CI=1 to make this a failure");
    true
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command as the postgres user when we are root.
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared throwaway cluster.
pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
}

static PG: OnceLock<Option<Pg>> = OnceLock::new();

/// The shared cluster, started on first use (under a file lock, since nextest runs each
/// test in its own process). None when PostgreSQL is missing outside CI.
pub fn pg() -> Option<&'static Pg> {
    PG.get_or_init(|| {
        if !Path::new(PG_BIN).join("initdb").exists() {
            missing("PostgreSQL 15", "no /usr/lib/postgresql/15/bin/initdb");
            return None;
        }
        // The cluster lives under /tmp (reachable by the postgres user whatever the
        // permissions of the checkout), one per target directory; scripts/test.sh finds
        // it through target/tmp/pg-datadir to stop it.
        let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            target_tmp.hash(&mut h);
            h.finish() & 0xffff_ffff
        };
        let dir = std::env::temp_dir().join(format!("stablehand-test-pg-{tag:08x}"));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&target_tmp).unwrap();
        fs::write(target_tmp.join("pg-datadir"), dir.join("data").to_string_lossy().as_bytes()).unwrap();
        let lock = fs::File::create(dir.join("setup.lock")).unwrap();
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let data = dir.join("data");
        let port_file = dir.join("port");
        if !data.join("PG_VERSION").exists() {
            let _ = fs::remove_dir_all(&data);
            if is_root() {
                run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir));
            }
            run_ok(
                as_postgres(&format!("{PG_BIN}/initdb"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                    .stdout(Stdio::null()),
            );
            let hba = data.join("pg_hba.conf");
            let old = fs::read_to_string(&hba).unwrap();
            fs::write(
                &hba,
                format!("host all {PW_USER} 127.0.0.1/32 scram-sha-256\n{old}"),
            )
            .unwrap();
            fs::write(&port_file, free_port().to_string()).unwrap();
        }
        let port: u16 = fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        let status = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("status")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        if !status.success() {
            run_ok(
                as_postgres(&format!("{PG_BIN}/pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-o")
                    .arg(format!(
                        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
                        dir.display()
                    ))
                    .arg("-l")
                    .arg(dir.join("log"))
                    .args(["-w", "start"])
                    .stdout(Stdio::null()),
            );
        }
        let pg = Pg { port, dir };
        pg.psql("postgres", &format!(
            "do $$ begin if not exists (select from pg_roles where rolname = '{PW_USER}') then \
             create role {PW_USER} login superuser password '{PW_SECRET}'; end if; end $$;"
        ));
        Some(pg)
    })
    .as_ref()
}

/// Returns the cluster or skips the test.
#[macro_export]
macro_rules! require_pg {
    () => {
        match $crate::support::pg() {
            Some(pg) => pg,
            None => return,
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across test processes, even when a pid is reused within one run
/// (pid_max is often 32768, and a run starts many processes): the pid, the process's
/// start time in microseconds (mod 10^6), and a counter.
pub fn unique(prefix: &str) -> String {
    static STARTED: OnceLock<u128> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() % 1_000_000)
            .unwrap_or(0)
    });
    format!(
        "{prefix}_{}_{started}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl Pg {
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL as the superuser; panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run_ok(
            Command::new(format!("{PG_BIN}/psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg(format!("--dbname={}", self.url(db)))
                .args(["-c", sql]),
        )
        .trim()
        .to_string()
    }

    /// A new, empty database.
    pub fn create_db(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.psql("postgres", &format!("create database {name}"));
        name
    }

    /// A database with some tables and rows (a few hundred KB).
    pub fn sample_db(&self) -> String {
        let db = self.create_db("sample");
        self.psql(
            &db,
            "create table users (id serial primary key, email text not null unique, created_at timestamptz default now());
             insert into users (email) select 'user' || g || '@example.test' from generate_series(1, 5000) g;
             create table notes (id bigserial primary key, user_id int references users(id), body text);
             insert into notes (user_id, body) select 1 + g % 5000, repeat('note ' || g, 8) from generate_series(1, 20000) g;",
        );
        db
    }
}

/// A port nothing listens on, and that no other test of this run was given: the
/// kernel may hand a port just released by one test process to another, and two stacks
/// sharing a PostgreSQL port meet in one cluster. Each port is claimed by a file
/// created exclusively under the target's tmp dir (claims older than an hour are stale).
pub fn free_port() -> u16 {
    let claims = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ports");
    std::fs::create_dir_all(&claims).unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let claim = claims.join(port.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Ok(_) => return port,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let stale = std::fs::metadata(&claim)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
                if stale {
                    let _ = std::fs::remove_file(&claim);
                }
            }
            Err(e) => panic!("claiming port {port} in {}: {e}", claims.display()),
        }
    }
}

/// An app directory with a `stablehand.toml`.
pub struct App {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl App {
    pub fn new(config: &str) -> App {
        let dir = tempfile::Builder::new()
            .prefix("stablehand-app")
            .tempdir()
            .unwrap();
        fs::write(dir.path().join("stablehand.toml"), config).unwrap();
        App {
            dir,
            env: Vec::new(),
        }
    }

    /// A direct-mode app pointed at `url` (through DATABASE_URL) with extra config.
    pub fn direct(url: &str, extra: &str) -> App {
        let mut app = App::new(&format!("[database]\nmode = \"direct\"\n{extra}"));
        app.env.push(("DATABASE_URL".into(), url.into()));
        app
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.path().join("backups/database")
    }

    /// `stablehand backup`; returns the new backup's id.
    pub fn backup(&self) -> String {
        self.json(&["backup"])["backup"]["id"]
            .as_str()
            .expect("a backup id")
            .to_string()
    }

    /// Cuts backup `id`'s data file to `len(size)` bytes: damage a checksum catches.
    pub fn truncate_backup(&self, id: &str, len: impl Fn(u64) -> u64) {
        let path = self.backup_dir().join(format!("{id}.dump.zst"));
        let size = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len(size))
            .unwrap();
    }

    /// The real binary, run in the app dir with a clean environment.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("stablehand").unwrap();
        c.current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("LANG", "C.UTF-8")
            .timeout(Duration::from_secs(120));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Same as `cmd` but as a std Command (for tests that watch the running process).
    pub fn std_cmd(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("stablehand"));
        c.current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The exit code of `stablehand ARGS...`.
    pub fn exit_code(&self, args: &[&str]) -> Option<i32> {
        self.cmd().args(args).output().unwrap().status.code()
    }

    /// Rewrites `stablehand.toml` with `change` (a test that reconfigures mid-way).
    pub fn edit_config(&self, change: impl FnOnce(String) -> String) {
        let path = self.path().join("stablehand.toml");
        fs::write(&path, change(fs::read_to_string(&path).unwrap())).unwrap();
    }

    /// Runs `stablehand --json ARGS...`, expects success and returns the JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "stablehand {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Files in the backup dir, sorted (the lock file excluded).
    pub fn backup_files(&self) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(self.backup_dir()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".stablehand-backup.lock")
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Runs `stablehand backup`, expects exit 1 with each of `needles` on stderr, and
    /// that no file that looks like a backup remains.
    pub fn backup_fails_with(&self, needles: &[&str]) {
        let out = self.cmd().arg("backup").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
        }
        self.assert_no_backup_left();
    }

    /// Asserts no file that looks like a backup (data, manifest or partial) remains.
    pub fn assert_no_backup_left(&self) {
        let files = self.backup_files();
        assert!(
            files.is_empty(),
            "expected no backup files, found {files:?}"
        );
    }
}

/// Writes an executable script (for failure injection only).
pub fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A git repository with one commit in `dir`; returns the commit sha.
pub fn git_init_with_commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .args(["-c", "user.name=Test", "-c", "user.email=test@example.test"])
                .args(args)
                .current_dir(dir),
        )
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "stablehand.toml"]);
    git(&["commit", "-q", "-m", "initial"]);
    git(&["rev-parse", "HEAD"]).trim().to_string()
}

/// Child processes of `parent` whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && name == comm {
            out.push(pid);
        }
    }
    out
}

/// Bytes a process has written so far (from /proc/PID/io).
pub fn bytes_written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// True when a Docker engine answers (installing nothing; `make test` starts it).
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let compose = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        || Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if ok && compose {
        return true;
    }
    !missing(
        "Docker engine with Compose",
        "`docker info` or compose failed",
    )
}

/// The tag of a tiny local image: busybox in a scratch image (nothing is pulled).
pub const BUSYBOX_IMAGE: &str = "stablehand-test-busybox:1";

/// Builds the busybox image once (under a file lock shared by test processes).
pub fn busybox_image() -> &'static str {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-image");
    fs::create_dir_all(&dir).unwrap();
    let lock = fs::File::create(dir.join("build.lock")).unwrap();
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let present = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !present {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed (make test installs it)");
        fs::copy(busybox, dir.join("busybox")).unwrap();
        fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .unwrap();
        run_ok(
            Command::new("docker")
                .args(["build", "-q", "-t", BUSYBOX_IMAGE])
                .arg(&dir),
        );
    }
    BUSYBOX_IMAGE
}

/// uid:gid of the host's postgres user.
pub fn postgres_ids() -> (u32, u32) {
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("postgres user");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Another client's session on a database: a psql running `sql` under its own
/// application name (`<prefix>_<pid>_<n>`). The client is killed and its server session
/// ended (and waited for) on drop.
pub struct Session {
    child: std::process::Child,
    /// Connection URL (no password) of the database.
    url: String,
    pub app: String,
}

impl Session {
    /// Starts the session and waits until the server shows it connected.
    pub fn start(url: &str, prefix: &str, sql: &str) -> Session {
        let app = unique(prefix);
        let child = Command::new(format!("{PG_BIN}/psql"))
            .arg(format!("--dbname={url}?application_name={app}"))
            .args(["-X", "-q", "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let session = Session {
            child,
            url: url.to_string(),
            app,
        };
        session.wait_until(&format!(
            "select count(*) > 0 from pg_stat_activity where application_name = '{}'",
            session.app
        ));
        session
    }

    /// A session that just sits connected (sleeping in a query).
    pub fn sleeping(url: &str, prefix: &str) -> Session {
        Session::start(url, prefix, "select pg_sleep(120)")
    }

    /// Runs SQL in a session of its own on the same database.
    pub fn sql(&self, sql: &str) -> String {
        run_ok(
            Command::new(format!("{PG_BIN}/psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg(format!("--dbname={}", self.url))
                .args(["-c", sql]),
        )
        .trim()
        .to_string()
    }

    /// Polls `query` (a boolean select) until it is true.
    fn wait_until(&self, query: &str) {
        wait_for(Duration::from_secs(20), || {
            (self.sql(query) == "t").then_some(())
        })
        .unwrap_or_else(|| panic!("timed out waiting for: {query}"));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed client leaves its backend running its query: end it, and wait.
        let gone = format!(
            "select count(*) = 0 from pg_stat_activity where application_name = '{}'",
            self.app
        );
        let _ = wait_for(Duration::from_secs(10), || {
            let _ = Command::new(format!("{PG_BIN}/psql"))
                .args(["-X", "-q", "-c"])
                .arg(format!(
                    "select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{}'",
                    self.app
                ))
                .arg(format!("--dbname={}", self.url))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            Command::new(format!("{PG_BIN}/psql"))
                .args(["-X", "-A", "-t", "-q", "-c", &gone])
                .arg(format!("--dbname={}", self.url))
                .output()
                .ok()
                .filter(|o| String::from_utf8_lossy(&o.stdout).trim() == "t")
        });
    }
}

/// Another session holding ACCESS EXCLUSIVE on a table, so that pg_dump waits: a real
/// stall. Released (client killed, server session ended) on drop.
pub struct TableLock(Session);

impl TableLock {
    /// Takes the lock on `table` in the database at `url` and waits until it is granted.
    pub fn hold(url: &str, table: &str) -> TableLock {
        let session = Session::start(
            url,
            "locker",
            &format!("begin; lock table {table} in access exclusive mode; select pg_sleep(120);"),
        );
        session.wait_until(&format!(
            "select count(*) > 0 from pg_locks l join pg_stat_activity a using (pid) \
             where a.application_name = '{}' and l.granted and l.mode = 'AccessExclusiveLock'",
            session.app
        ));
        TableLock(session)
    }
}

/// Runs git in `dir` (as a test author), asserting success; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.test"])
        .args(args)
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// psql as `user` on 127.0.0.1:`port`, database `db`: unaligned tuples, asserting success.
pub fn psql_at(port: u16, user: &str, db: &str, sql: &str) -> String {
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg(format!(
            "--dbname=postgresql://{user}@127.0.0.1:{port}/{db}"
        ))
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes every tag of an image repository a test built (best effort).
pub fn remove_image_repository(repository: &str) {
    let Ok(out) = Command::new("docker")
        .args([
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            repository,
        ])
        .output()
    else {
        return;
    };
    for reference in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("docker")
            .args(["image", "rm", reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// SIGKILLs a process a test started (by its id).
pub fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A local S3 endpoint (moto's server) for this test alone, on 127.0.0.1; stopped when
/// dropped. `make test` installs it into /opt/stablehand-moto.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let bin = ["/opt/stablehand-moto/bin/moto_server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(bin) = bin else {
            missing(
                "moto_server (a local S3 endpoint)",
                "run `make test`, which installs it into /opt/stablehand-moto",
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let moto = Moto { port, child };
        wait_for(Duration::from_secs(60), || {
            ureq::get(&moto.endpoint()).call().ok().map(drop)
        })
        .expect("moto_server answered");
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        ureq::put(&format!("{}/{bucket}", self.endpoint()))
            .call()
            .expect("creating the bucket");
    }

    /// The keys in `bucket` (complete objects only).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let body = ureq::get(&format!("{}/{bucket}?list-type=2", self.endpoint()))
            .call()
            .expect("listing the bucket")
            .into_string()
            .unwrap();
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// An object's bytes (a signed request, as objects are private).
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStore;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            store
                .get(&object_store::path::Path::from(key))
                .await
                .expect("reading an object")
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    /// Multipart uploads started and not completed.
    pub fn uploads_in_progress(&self, bucket: &str) -> usize {
        ureq::get(&format!("{}/{bucket}?uploads", self.endpoint()))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .map(|b| b.matches("<UploadId>").count())
            .unwrap_or(0)
    }

    /// Freezes the server (SIGSTOP): requests hang, as with a dead network path.
    pub fn freeze(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }

    pub fn thaw(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        )
        .unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
