//! The one way stablehand runs a program: streamed stdout, stderr drained on its own
//! thread, the whole process group killed on timeout or interrupt, and errors that name
//! the program, its exit status and the last lines it wrote to stderr. Secrets travel
//! only in the environment and never appear in what is displayed.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::redact::redact_text;

/// How many trailing stderr lines an error carries.
const STDERR_TAIL_LINES: usize = 12;

/// What went wrong running a program.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("`{program}` was not found{hint}")]
    NotFound { program: String, hint: String },
    #[error("could not start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` {status}{}", tail_suffix(.stderr_tail))]
    Failed {
        program: String,
        status: String,
        stderr_tail: String,
    },
    #[error("`{program}` did not finish within {} and was killed{}", humantime::format_duration(*.limit), tail_suffix(.stderr_tail))]
    TimedOut {
        program: String,
        limit: Duration,
        stderr_tail: String,
    },
    #[error("`{program}` was stopped because stablehand was interrupted")]
    Interrupted { program: String },
    #[error("`sudo -n {target}` would ask for a password (runtime.sudo = true runs Docker and Compose through sudo, which must never prompt): let {user} run it without one, e.g. in /etc/sudoers.d/stablehand: `{user} ALL=(root) NOPASSWD:SETENV: {target}`")]
    SudoPassword { target: String, user: String },
    #[error("sudo refused to pass the environment variables {names} to `{target}` (sudo resets the environment; Compose reads these): add SETENV to the sudoers rule (`{user} ALL=(root) NOPASSWD:SETENV: {target}`), or keep them with `Defaults:{user} env_keep += \"{}\"`", .names.replace(',', " "))]
    SudoEnvironment {
        target: String,
        user: String,
        names: String,
    },
    #[error("reading the output of `{program}`: {source}")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines:\n{}", indent(tail))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A program to run, with arguments and environment. Environment values are never
/// displayed, so that is where passwords go.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    timeout: Option<Duration>,
    not_found_hint: String,
    cleanup: bool,
    /// Run through `sudo -n`, passing these environment variables by name.
    sudo: Option<Vec<String>>,
    /// Run as another user (stablehand is root): uid, gid, supplementary groups.
    identity: Option<Identity>,
}

/// A user to run a program as (see `Cmd::run_as`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
}

impl Cmd {
    /// A command for `program` (a name looked up in PATH, or a path).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            timeout: None,
            not_found_hint: String::new(),
            cleanup: false,
            sudo: None,
            identity: None,
        }
    }

    /// Runs the program as `sudo -n [--preserve-env=NAMES] -- PROGRAM ARGS`: never a
    /// password prompt, and the variables `preserve` names (plus those set with `env`)
    /// pass by name only, so no value reaches the command line. On a timeout or an
    /// interrupt the program gets SIGTERM first, which sudo relays (a non-root
    /// stablehand cannot kill a root child).
    pub fn via_sudo(mut self, preserve: Vec<String>) -> Self {
        self.sudo = Some(preserve);
        self
    }

    /// Runs the program as `who` (stablehand must be root): supplementary groups, gid
    /// and uid are switched in the child before exec, and HOME/USER/LOGNAME are theirs.
    pub fn run_as(mut self, who: Identity) -> Self {
        self = self
            .env("HOME", &who.home)
            .env("USER", &who.name)
            .env("LOGNAME", &who.name);
        self.identity = Some(who);
        self
    }

    /// True when this command runs through sudo.
    pub fn is_sudo(&self) -> bool {
        self.sudo.is_some()
    }

    /// The program as given (a name or a path).
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Adds one argument (never a secret: arguments are visible to every local user).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments (never secrets).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (values are never printed).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Removes an inherited environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Runs the program in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Kills the process group when the program runs longer than `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Marks a cleanup step, which still runs after stablehand was interrupted (other
    /// commands refuse to start then). Give it a short timeout.
    pub fn cleanup(mut self) -> Self {
        self.cleanup = true;
        self
    }

    /// Adds advice to the "not found" error (for example, which package to install).
    pub fn not_found_hint(mut self, hint: impl Into<String>) -> Self {
        self.not_found_hint = hint.into();
        self
    }

    /// The arguments, as the child will see them.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// The program's short name, as shown in messages.
    pub fn program_name(&self) -> String {
        let p = PathBuf::from(&self.program);
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.to_string_lossy().into_owned())
    }

    /// The command line with URLs redacted; environment values are never included.
    pub fn display(&self) -> String {
        let (program, args) = self.argv();
        let mut parts = vec![program.to_string_lossy().into_owned()];
        parts.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        redact_text(&parts.join(" "))
    }

    /// The program and arguments actually executed (with the sudo prefix, if any).
    fn argv(&self) -> (OsString, Vec<OsString>) {
        let Some(preserve) = &self.sudo else {
            return (self.program.clone(), self.args.clone());
        };
        let mut names: Vec<String> = preserve.clone();
        names.extend(
            self.env
                .iter()
                .map(|(k, _)| k.to_string_lossy().into_owned()),
        );
        names.sort();
        names.dedup();
        let mut args: Vec<OsString> = vec!["-n".into()];
        if !names.is_empty() {
            args.push(format!("--preserve-env={}", names.join(",")).into());
        }
        args.push("--".into());
        args.push(self.program.clone());
        args.extend(self.args.iter().cloned());
        ("sudo".into(), args)
    }

    fn label(&self) -> String {
        // The program plus a subcommand-ish second word, e.g. "docker compose".
        let name = self.program_name();
        match self.args.first().map(|a| a.to_string_lossy()) {
            Some(first) if !first.starts_with('-') && (name == "docker" || name == "git") => {
                format!("{name} {first}")
            }
            _ => name,
        }
    }

    fn command(&self, stdin: Stdio) -> Command {
        let (program, args) = self.argv();
        let mut c = Command::new(program);
        for key in &self.env_remove {
            c.env_remove(key);
        }
        c.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        // A child must not outlive a stablehand that was killed outright (SIGKILL leaves
        // no time to clean up): the kernel kills it when its parent dies.
        let identity = self.identity.as_ref().map(|i| {
            (
                i.uid,
                i.gid,
                i.groups
                    .iter()
                    .map(|g| *g as libc::gid_t)
                    .collect::<Vec<_>>(),
            )
        });
        // SAFETY: setgroups, setgid, setuid and prctl are async-signal-safe system calls
        // and touch no memory of the parent (the group list was built before the fork).
        unsafe {
            c.pre_exec(move || {
                if let Some((uid, gid, groups)) = &identity {
                    if libc::setgroups(groups.len(), groups.as_ptr()) == -1
                        || libc::setgid(*gid) == -1
                        || libc::setuid(*uid) == -1
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // After the uid change: changing credentials clears the death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// Runs to completion with no input and returns stdout; fails on non-zero exit.
    pub fn output(&self) -> Result<String, ProcessError> {
        let running = self.spawn_inner(Stdio::null())?;
        self.collect(running)
    }

    /// Reads a started program's stdout to its end and waits for it.
    fn collect(&self, mut running: Running) -> Result<String, ProcessError> {
        let mut out = Vec::new();
        let read = running
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_end(&mut out);
        let status = running.wait();
        read.map_err(|source| ProcessError::Io {
            program: self.label(),
            source,
        })?;
        status?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs to completion with `input` on stdin and returns stdout; fails on non-zero
    /// exit. The input is written from a thread, so a program that answers before it
    /// has read everything cannot deadlock us.
    pub fn output_with_input(&self, input: &[u8]) -> Result<String, ProcessError> {
        let mut running = self.spawn_inner(Stdio::piped())?;
        let mut stdin = running.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            // A program that exits early closes the pipe: its exit status tells why.
            let _ = stdin.write_all(&input);
        });
        let result = self.collect(running);
        let _ = writer.join();
        result
    }

    /// Starts the program with stdout to be streamed by the caller.
    pub fn spawn(&self) -> Result<Running, ProcessError> {
        self.spawn_inner(Stdio::null())
    }

    /// Starts the program with a pipe to its stdin as well.
    pub fn spawn_with_stdin(&self) -> Result<Running, ProcessError> {
        self.spawn_inner(Stdio::piped())
    }

    fn spawn_inner(&self, stdin: Stdio) -> Result<Running, ProcessError> {
        install_interrupt_handler();
        if interrupted() && !self.cleanup {
            return Err(ProcessError::Interrupted {
                program: self.label(),
            });
        }
        tracing::debug!(command = %self.display(), "running");
        let mut child = self.command(stdin).spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound && self.is_sudo() {
                ProcessError::NotFound {
                    program: "sudo".into(),
                    hint: ": runtime.sudo = true runs Docker and Compose through sudo; install it (apt-get install sudo) or set runtime.sudo = false".into(),
                }
            } else if source.kind() == io::ErrorKind::NotFound {
                ProcessError::NotFound {
                    program: self.program.to_string_lossy().into_owned(),
                    hint: if self.not_found_hint.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", self.not_found_hint)
                    },
                }
            } else {
                ProcessError::Spawn {
                    program: self.label(),
                    source,
                }
            }
        })?;
        let pid = child.id() as i32;
        let via_sudo = self.is_sudo();
        live_groups().lock().unwrap().insert(pid, via_sudo);

        let stderr = child.stderr.take().expect("stderr is piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_thread = {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || drain_stderr(stderr, &tail))
        };

        let timed_out = Arc::new(AtomicBool::new(false));
        let (cancel_tx, watchdog) = match self.timeout {
            Some(limit) => {
                let (tx, rx) = mpsc::channel::<()>();
                let flag = Arc::clone(&timed_out);
                let handle = std::thread::spawn(move || {
                    if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                        flag.store(true, Ordering::SeqCst);
                        stop_group(pid, via_sudo);
                    }
                });
                (Some(tx), Some(handle))
            }
            None => (None, None),
        };

        Ok(Running {
            label: self.label(),
            sudo_target: via_sudo.then(|| self.program.to_string_lossy().into_owned()),
            stdout: child.stdout.take(),
            stdin: child.stdin.take(),
            child,
            pid,
            timeout: self.timeout,
            timed_out,
            cancel_watchdog: cancel_tx,
            watchdog,
            stderr_thread: Some(stderr_thread),
            tail,
            finished: false,
        })
    }
}

fn drain_stderr(stderr: impl Read, tail: &Mutex<VecDeque<String>>) {
    let reader = BufReader::new(stderr);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let line = redact_text(String::from_utf8_lossy(&line).trim_end());
        tracing::trace!(target: "stablehand::child", "{line}");
        let mut t = tail.lock().unwrap();
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// A started program. Read `stdout`, then call `wait`, which turns every way of not
/// finishing cleanly into an error. Dropping it without `wait` kills the process group.
pub struct Running {
    label: String,
    /// The program sudo runs, when the command goes through sudo.
    sudo_target: Option<String>,
    pub stdout: Option<ChildStdout>,
    pub stdin: Option<ChildStdin>,
    child: Child,
    pid: i32,
    timeout: Option<Duration>,
    timed_out: Arc<AtomicBool>,
    cancel_watchdog: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    finished: bool,
}

impl Running {
    /// Kills the whole process group now (used when the consumer of stdout fails).
    pub fn kill(&mut self) {
        if !self.finished {
            stop_group(self.pid, self.sudo_target.is_some());
        }
    }

    /// Waits for the program and reports how it ended.
    pub fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        self.stdin.take();
        // Wait for the exit without reaping: while the leader is a zombie its process
        // group id cannot be reused, so killing leftovers of the group stays safe.
        let exited = wait_without_reaping(self.pid);
        if let Some(tx) = self.cancel_watchdog.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.watchdog.take() {
            let _ = h.join();
        }
        if exited {
            kill_group(self.pid);
        }
        live_groups().lock().unwrap().remove(&self.pid);
        let waited = self.child.wait();
        self.finished = true;
        self.stdout.take();
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        let status = waited.map_err(|source| ProcessError::Io {
            program: self.label.clone(),
            source,
        })?;
        let stderr_tail = self.stderr_tail();
        if self.timed_out.load(Ordering::SeqCst) {
            return Err(ProcessError::TimedOut {
                program: self.label.clone(),
                limit: self.timeout.unwrap_or_default(),
                stderr_tail,
            });
        }
        if status.success() {
            return Ok(status);
        }
        if interrupted() {
            return Err(ProcessError::Interrupted {
                program: self.label.clone(),
            });
        }
        if let Some(target) = &self.sudo_target {
            if let Some(refusal) = sudo_refusal(target, &stderr_tail) {
                return Err(refusal);
            }
        }
        Err(ProcessError::Failed {
            program: self.label.clone(),
            status: describe_status(status),
            stderr_tail,
        })
    }

    /// The last lines the program wrote to stderr so far.
    pub fn stderr_tail(&self) -> String {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            stop_group(self.pid, self.sudo_target.is_some());
            live_groups().lock().unwrap().remove(&self.pid);
            let _ = self.child.wait();
            if let Some(tx) = self.cancel_watchdog.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// "exited with status 1" or "was killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        format!("was killed by signal {sig} ({name})")
    } else {
        format!("ended with {status}")
    }
}

/// Blocks until `pid` has exited, leaving it unreaped (a zombie). False if that failed.
fn wait_without_reaping(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    loop {
        match waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn kill_group(pid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// How long a program run through sudo gets to end after SIGTERM before SIGKILL.
const SUDO_GRACE: Duration = Duration::from_secs(5);

/// Kills a process group; one led by sudo gets SIGTERM first and up to `SUDO_GRACE`
/// to end: sudo relays SIGTERM to its command, which runs as root (often in a session
/// of its own, on sudo's pty) and which SIGKILL to sudo's group would leave running.
fn stop_group(pid: i32, via_sudo: bool) {
    if via_sudo {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + SUDO_GRACE;
        while std::time::Instant::now() < deadline && !has_exited(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    kill_group(pid);
}

/// True when `pid` (our child) has exited; it is left unreaped.
fn has_exited(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    match waitid(
        Id::Pid(nix::unistd::Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
    ) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// The refusal sudo itself wrote (it prefixes its messages with "sudo: "), as an error
/// that says what to add to sudoers; None when the program ran and failed on its own.
fn sudo_refusal(target: &str, stderr_tail: &str) -> Option<ProcessError> {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string());
    for line in stderr_tail.lines().map(str::trim) {
        let Some(message) = line.strip_prefix("sudo: ") else {
            continue;
        };
        if message.contains("a password is required") || message.contains("a terminal is required")
        {
            return Some(ProcessError::SudoPassword {
                target: target.to_string(),
                user,
            });
        }
        if let Some(names) =
            message.split_once("not allowed to set the following environment variables:")
        {
            return Some(ProcessError::SudoEnvironment {
                target: target.to_string(),
                user,
                names: names.1.trim().replace(' ', ""),
            });
        }
    }
    None
}

/// Process groups of running children, and whether sudo leads them.
fn live_groups() -> &'static Mutex<HashMap<i32, bool>> {
    static GROUPS: OnceLock<Mutex<HashMap<i32, bool>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(HashMap::new()))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Set while production is being changed (see `shield_production`).
static SHIELDED: AtomicBool = AtomicBool::new(false);
/// Milliseconds since the epoch of the first signal taken while shielded (0: none).
static DEFERRED_AT: AtomicU64 = AtomicU64::new(0);
/// A second signal within this long of the first aborts even a shielded command.
pub const ABORT_WINDOW: Duration = Duration::from_secs(5);

/// True once SIGINT/SIGTERM/SIGHUP aborted stablehand: its child process groups were
/// killed and no new program starts (but cleanup ones).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// When `err` comes from an interrupt (a program stablehand ran was stopped, or refused
/// to start, because stablehand was interrupted): that cause alone, so the message says
/// "interrupted" instead of blaming what the interrupt cut short (a tool, the engine).
pub fn interruption_in(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|c| match c.downcast_ref::<ProcessError>() {
            Some(e @ ProcessError::Interrupted { .. }) => Some(e.to_string()),
            _ => None,
        })
}

/// True once a signal arrived while production was shielded: the command goes on to a
/// healthy, matching state, then exits.
pub fn deferred_interrupt() -> bool {
    DEFERRED_AT.load(Ordering::SeqCst) != 0
}

/// While the returned guard lives, a first SIGINT/SIGTERM/SIGHUP does not abort: the
/// children keep running, the command finishes the shortest path back to a healthy
/// release (it reads `deferred_interrupt()`), and a second signal within
/// `ABORT_WINDOW` aborts (the journal stays for `stablehand recover`).
pub fn shield_production() -> Shield {
    install_interrupt_handler();
    SHIELDED.store(true, Ordering::SeqCst);
    Shield(())
}

/// See `shield_production`.
pub struct Shield(());

impl Drop for Shield {
    fn drop(&mut self) {
        SHIELDED.store(false, Ordering::SeqCst);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        .max(1)
}

/// What a signal does: deferred while shielded (the first one, or one long after it),
/// otherwise an abort that kills every child process group, so the command's own error
/// path runs its cleanup and reports the interruption.
fn on_signal() {
    let first = DEFERRED_AT.load(Ordering::SeqCst);
    let now = now_ms();
    let within_window = first != 0 && now.saturating_sub(first) < ABORT_WINDOW.as_millis() as u64;
    if SHIELDED.load(Ordering::SeqCst) && !within_window {
        if first == 0 {
            DEFERRED_AT.store(now, Ordering::SeqCst);
        }
        // A closed terminal must not turn this note into a failure.
        let _ = writeln!(
            io::stderr(),
            "stablehand: interrupted while production is being changed: finishing the way back to a healthy release first (signal again within {} s to abort; `stablehand recover` then finishes it)",
            ABORT_WINDOW.as_secs()
        );
        return;
    }
    INTERRUPTED.store(true, Ordering::SeqCst);
    if SHIELDED.load(Ordering::SeqCst) {
        let _ = writeln!(
            io::stderr(),
            "stablehand: aborting: the journal stays; run `stablehand recover` to bring production back"
        );
    }
    if let Ok(groups) = live_groups().lock() {
        for (pid, via_sudo) in groups.iter() {
            if *via_sudo {
                // sudo relays SIGTERM to its root command; `wait` kills what is left
                // once sudo has exited.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            } else {
                kill_group(*pid);
            }
        }
    }
}

/// Ignores SIGHUP from here on (it stays ignored in the programs stablehand runs): a
/// deploy, rollback or recover whose terminal goes away (a dropped SSH session) runs
/// to completion, and its outcome stays readable (`status`, `history`, `wait`).
pub fn ignore_hangup() {
    install_interrupt_handler();
    // SAFETY: setting a signal's disposition to SIG_IGN runs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler (`on_signal`) once.
pub fn install_interrupt_handler() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = ctrlc::set_handler(on_signal);
    });
}

#[cfg(test)]
mod tests;
