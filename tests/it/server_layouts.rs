//! The proposal's server as it is (issue 19), end to end on the real engine: Compose
//! reached only through a configured path that is not on PATH; Docker reached only
//! through `sudo -n` by a deploy user outside the docker group; a work tree owned by
//! another user than the one running stablehand. Each deploys (0) or is refused with
//! the message docs/troubleshooting.md documents.
//!
//! These tests run as root (they create users and sudoers rules, removed on drop, also
//! when the test fails); without root, sudo or useradd they skip, and fail under `CI`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::deploy::Stack;
use crate::support::missing;

/// A throwaway local user (and, once `allow` is called, its sudoers rule), removed on
/// drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    sudoers: PathBuf,
}

impl TestUser {
    /// A new user with a home directory and no supplementary groups (not in docker).
    fn create(prefix: &str) -> TestUser {
        let name = format!("{prefix}{}", std::process::id());
        let ok = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd {name}");
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        TestUser {
            sudoers: PathBuf::from(format!("/etc/sudoers.d/stablehand-test-{name}")),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
            name,
        }
    }

    /// Installs `rule` (a sudoers line, `{user}` replaced) as this user's sudoers file.
    fn allow(&self, rule: &str) {
        let tmp = self.sudoers.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", rule.replace("{user}", &self.name))).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o440)).unwrap();
        let checked = Command::new("visudo")
            .args(["-c", "-q", "-f"])
            .arg(&tmp)
            .status()
            .unwrap()
            .success();
        assert!(checked, "visudo accepts {rule}");
        fs::rename(&tmp, &self.sudoers).unwrap();
    }

    /// `cmd` run as this user, with its HOME.
    fn run(&self, mut cmd: Command) -> Command {
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        cmd
    }

    /// `chown -R` of `path` to this user.
    fn own(&self, path: &Path) {
        let ok = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown -R {}", path.display());
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.sudoers);
        let _ = fs::remove_file(self.sudoers.with_extension("tmp"));
        let _ = Command::new("userdel")
            .args(["-r", "-f", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Root, sudo, useradd: what these tests need besides the engine.
fn can_manage_users() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return !missing("root", "these tests create users and sudoers rules");
    }
    for tool in ["sudo", "useradd", "visudo"] {
        if which(tool).is_none() {
            return !missing(tool, "scripts/ensure-deps.sh installs sudo");
        }
    }
    true
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A git config that trusts every directory, for the test's own git commands as root
/// in trees it handed to another user (never given to stablehand).
fn trusting_git_config(stack: &Stack) -> PathBuf {
    let file = stack.path().join("root-gitconfig");
    fs::write(
        &file,
        "[safe]\n\tdirectory = *\n[user]\n\tname = test\n\temail = test@example.invalid\n",
    )
    .unwrap();
    file
}

/// git as root, trusting trees owned by others (the harness, not stablehand); stdout.
fn root_git(stack: &Stack, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", trusting_git_config(stack))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A release authored in dev/ and pushed (as `Stack::commit`, trusting the remote).
fn release(stack: &Stack, message: &str) {
    let dev = stack.dev();
    fs::write(dev.join("app/www/version"), format!("{message}\n")).unwrap();
    root_git(stack, &dev, &["add", "-A"]);
    root_git(stack, &dev, &["commit", "-q", "-m", message]);
    root_git(stack, &dev, &["push", "-q", "origin", "main"]);
}

/// Changes the config in dev/, pushes it and pulls it into app/ (as root).
fn change_config(stack: &Stack, change: impl FnOnce(String) -> String) {
    let file = stack.dev().join("stablehand.toml");
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, change(text)).unwrap();
    release(stack, "config for this server");
    root_git(stack, &stack.app(), &["pull", "-q", "--ff-only"]);
}

/// Adds lines at the top of the `[runtime]` table.
fn runtime_lines(lines: &str) -> impl FnOnce(String) -> String + '_ {
    move |text| text.replacen("[runtime]\n", &format!("[runtime]\n{lines}"), 1)
}

/// (exit code, stdout, stderr) of a command.
fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The doctor finding named `check`.
fn finding(doctor_json: &str, check: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(doctor_json).unwrap_or_else(|e| panic!("{e}: {doctor_json}"));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .cloned()
        .unwrap_or_else(|| panic!("no {check:?} finding in {doctor_json}"))
}

/// Every file under `dir` with its owner and mode.
fn files_under(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let meta = fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            out.extend(files_under(&e.path()));
        }
        out.push((e.path(), meta.uid(), meta.mode() & 0o777));
    }
    out
}

/// A dir of symlinks to `tools` (by name, from PATH): the PATH of a server that has
/// them but not Compose.
fn path_with_only(root: &Path, tools: &[&str]) -> PathBuf {
    let bin = root.join("path-bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in tools {
        std::os::unix::fs::symlink(which(tool).unwrap(), bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn compose_reached_only_through_runtime_compose() {
    let Some(s) = Stack::fast("") else { return };
    // The server's toolbox: Compose (and here the docker CLI) outside PATH.
    let toolbox = s.path().join("var/lib/toolbox/bin");
    fs::create_dir_all(&toolbox).unwrap();
    let compose = toolbox.join("docker-compose");
    std::os::unix::fs::symlink(which("docker-compose").unwrap(), &compose).unwrap();
    let docker = toolbox.join("docker");
    std::os::unix::fs::symlink(which("docker").unwrap(), &docker).unwrap();
    let path = path_with_only(s.path(), &["git", "sh"]);
    let stablehand = |args: &[&str]| {
        let mut c = s.stablehand_cmd(args);
        c.env("PATH", &path);
        run(c)
    };

    // Nothing on PATH and nothing configured: the error says which key to set.
    let (code, out, err) = stablehand(&["deploy"]);
    assert_eq!(code, 10, "{out}\n{err}");
    assert!(
        out.contains("set runtime.compose to the path of the Compose binary"),
        "{out}\n{err}"
    );

    // A path that is not there is a configuration error naming the key.
    fs::write(
        s.app().join("bad.toml"),
        fs::read_to_string(s.app().join("stablehand.toml"))
            .unwrap()
            .replacen(
                "[runtime]\n",
                "[runtime]\ncompose = \"/var/lib/toolbox/bin/docker-compose-missing\"\n",
                1,
            ),
    )
    .unwrap();
    let (code, _, err) = stablehand(&["--config", "bad.toml", "status"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("runtime.compose") && err.contains("cannot be used"),
        "{err}"
    );
    fs::remove_file(s.app().join("bad.toml")).unwrap();

    change_config(
        &s,
        runtime_lines(&format!(
            "compose = \"{}\"\ndocker = \"{}\"\n",
            compose.display(),
            docker.display()
        )),
    );
    let (_, out, err) = stablehand(&["--json", "doctor"]);
    let found = finding(&out, "compose");
    assert_eq!(found["status"], "ok", "{found}\n{err}");
    let detail = found["detail"].as_str().unwrap();
    assert!(
        detail.contains(&compose.display().to_string()) && detail.contains("1.29"),
        "doctor names the binary and its version: {detail}"
    );
    let engine = finding(&out, "docker engine");
    assert!(
        engine["detail"]
            .as_str()
            .unwrap()
            .contains(&docker.display().to_string()),
        "{engine}"
    );

    let (code, out, err) = stablehand(&["--json", "deploy"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(s.health_status(), Some(200));
}

#[test]
fn docker_only_through_sudo_as_a_user_outside_the_docker_group() {
    if !can_manage_users() {
        return;
    }
    let user = TestUser::create("shsudo");
    let Some(s) = Stack::fast("") else { return };
    // The web port comes from the environment (Compose interpolation), as secrets do:
    // through sudo it must pass by name.
    let compose_file = s.dev().join("docker-compose.yml");
    let text = fs::read_to_string(&compose_file).unwrap();
    let port_line = format!("WEB_PORT: \"{}\"", s.web_port);
    assert!(text.contains(&port_line));
    fs::write(
        &compose_file,
        text.replace(&port_line, "WEB_PORT: \"${SH_TEST_WEB_PORT}\""),
    )
    .unwrap();
    change_config(&s, runtime_lines("sudo = true\n"));
    // The deploy user owns the tree and the remote; it cannot reach the engine itself.
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    user.own(&s.app());
    user.own(&s.path().join("remote.git"));
    let mut direct = user.run(Command::new("docker"));
    direct
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    assert!(
        !direct.status().unwrap().success(),
        "the test user must not reach the engine without sudo"
    );
    let as_user = |args: &[&str]| {
        let mut c = s.stablehand_cmd(args);
        c.env("SH_TEST_WEB_PORT", s.web_port.to_string());
        run(user.run(c))
    };

    // No sudoers rule: sudo would ask for a password; the deploy is refused, saying what
    // to add.
    let (code, out, err) = as_user(&["deploy"]);
    assert_eq!(code, 10, "{out}\n{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("would ask for a password"), "{said}");
    assert!(said.contains("NOPASSWD:SETENV:"), "{said}");

    // A rule without SETENV: sudo refuses to pass the variables Compose reads.
    let docker = which("docker").unwrap();
    let compose = which("docker-compose").unwrap();
    let commands = format!("{}, {}", docker.display(), compose.display());
    user.allow(&format!("{{user}} ALL=(root) NOPASSWD: {commands}"));
    let (code, out, err) = as_user(&["deploy"]);
    assert_eq!(code, 10, "{out}\n{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains("sudo refused to pass the environment variables")
            && said.contains("SH_TEST_WEB_PORT"),
        "{said}"
    );

    // With SETENV: doctor passes the sudo checks and the deploy goes through.
    user.allow(&format!("{{user}} ALL=(root) NOPASSWD:SETENV: {commands}"));
    let (_, out, err) = as_user(&["--json", "doctor"]);
    for check in ["sudo", "sudo environment", "docker engine", "compose"] {
        let f = finding(&out, check);
        assert_eq!(f["status"], "ok", "{f}\n{err}");
    }
    let (code, out, err) = as_user(&["--json", "deploy"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(s.health_status(), Some(200));
    assert!(
        !err.contains("SH_TEST_WEB_PORT variable is not set"),
        "the variable reached Compose: {err}"
    );

    let backups = files_under(&s.app().join("backups/database"));
    assert!(!backups.is_empty());
    for (path, uid, mode) in &backups {
        assert_eq!(
            *uid,
            user.uid,
            "{} belongs to the deploy user",
            path.display()
        );
        if path.is_file() && path.to_string_lossy().ends_with(".zst") {
            assert_eq!(*mode, 0o600, "{} is 0600", path.display());
        }
    }
}

#[test]
fn a_work_tree_owned_by_another_user() {
    if !can_manage_users() {
        return;
    }
    let owner = TestUser::create("showner");
    let stranger = TestUser::create("shother");
    let Some(s) = Stack::fast("") else { return };
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // The release is pushed (as root) before the remote is handed to its owner: an
    // object directory root created there would refuse the owner's tag push whenever a
    // tag object's hash fell into it (a failing push is reported, the deploy goes on).
    release(&s, "v2");
    owner.own(&s.app());
    owner.own(&s.path().join("remote.git"));

    // As root: git runs as the tree's owner (never trusting the tree for root), and
    // what the deploy wrote is handed to the owner.
    let (code, out, err) = run(s.stablehand_cmd(&["--json", "doctor"]));
    let f = finding(&out, "work tree owner");
    assert_eq!(f["status"], "ok", "{f}\n{err}");
    assert!(f["detail"].as_str().unwrap().contains("runs git as"), "{f}");
    assert!(code == 0 || code == 1, "{out}");
    let (code, out, err) = s.stablehand(&["--json", "deploy"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("pushing the tags"), "{out}\n{err}");
    assert_eq!(
        root_git(
            &s,
            &s.path().join("remote.git"),
            &["rev-parse", "latest-stable^{commit}"]
        ),
        root_git(&s, &s.app(), &["rev-parse", "HEAD"]),
        "the tags were pushed"
    );
    let state = files_under(&s.app().join(".stablehand"));
    let backups = files_under(&s.app().join("backups"));
    assert!(!state.is_empty() && !backups.is_empty());
    for (path, uid, _) in state.iter().chain(&backups) {
        assert_eq!(
            *uid,
            owner.uid,
            "{} was handed to the owner",
            path.display()
        );
    }
    for (path, _, mode) in &backups {
        if path.is_file() && path.to_string_lossy().ends_with(".zst") {
            assert_eq!(*mode, 0o600, "{} is 0600", path.display());
        }
    }
    // Files of the work tree git wrote are the owner's too (git ran as them).
    let version = fs::metadata(s.app().join("app/www/version")).unwrap();
    assert_eq!(version.uid(), owner.uid);

    // The owner reads what root wrote.
    let (code, out, err) = run(owner.run(s.stablehand_cmd(&["--json", "history"])));
    assert_eq!(code, 0, "{out}\n{err}");

    // Another user: git refuses the tree, and so does stablehand, saying why and how.
    let (code, out, err) = run(stranger.run(s.stablehand_cmd(&["stable", "list"])));
    assert_ne!(code, 0, "{out}");
    let said = format!("{out}{err}");
    assert!(said.contains("detected dubious ownership"), "{said}");
    assert!(
        said.contains(&format!("it is owned by {}", owner.name))
            && said.contains("would run as")
            && said.contains(&format!("sudo chown -R {}:", stranger.name)),
        "{said}"
    );
    let (_, out, _) = run(stranger.run(s.stablehand_cmd(&["--json", "doctor"])));
    assert_eq!(finding(&out, "work tree owner")["status"], "fail", "{out}");

    // A root run killed before it handed its files over leaves one behind: the owner's
    // next deploy is refused before anything changes, naming the file and the fix...
    let leftover = s.app().join(".stablehand/left-by-root.json");
    fs::write(&leftover, "{}").unwrap();
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = run(owner.run(s.stablehand_cmd(&["deploy"])));
    assert_eq!(code, 10, "{out}\n{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains("left-by-root.json is owned by root")
            && said.contains("was stopped before it handed its files"),
        "{said}"
    );
    // ... and the next root run hands it over.
    let (code, _, err) = s.stablehand(&["status"]);
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(fs::metadata(&leftover).unwrap().uid(), owner.uid);
}
