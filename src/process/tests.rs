use super::*;
use std::time::Instant;

#[test]
fn failing_program_reports_status_and_stderr_tail() {
    let err = Cmd::new("sh")
        .args(["-c", "echo first >&2; echo second >&2; exit 3"])
        .output()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(msg.contains("second"), "{msg}");
}

#[test]
fn timeout_kills_the_whole_group() {
    let started = Instant::now();
    let err = Cmd::new("sh")
        .args(["-c", "sleep 30 & sleep 30; echo never"])
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
    // The grandchild `sleep` held stdout open; killing only `sh` would hang here.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn missing_program_is_named() {
    let err = Cmd::new("definitely-not-a-program-xyz")
        .not_found_hint("install it")
        .output()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`definitely-not-a-program-xyz` was not found: install it"
    );
}

#[test]
fn display_never_shows_env_and_redacts_urls() {
    let cmd = Cmd::new("psql")
        .arg("postgresql://app:hunter2@db/app")
        .env("PGPASSWORD", "hunter2");
    assert!(!cmd.display().contains("hunter2"), "{}", cmd.display());
}

#[test]
fn sudo_refusals_become_advice() {
    let password = sudo_refusal("/usr/bin/docker", "sudo: a password is required").unwrap();
    let msg = password.to_string();
    assert!(msg.contains("would ask for a password"), "{msg}");
    assert!(msg.contains("NOPASSWD:SETENV: /usr/bin/docker"), "{msg}");
    let env = sudo_refusal(
        "/usr/bin/docker",
        "sudo: sorry, you are not allowed to set the following environment variables: COMPOSE_PROJECT_NAME, DB_PASSWORD",
    )
    .unwrap();
    let msg = env.to_string();
    assert!(msg.contains("COMPOSE_PROJECT_NAME,DB_PASSWORD"), "{msg}");
    assert!(
        msg.contains("env_keep += \"COMPOSE_PROJECT_NAME DB_PASSWORD\""),
        "{msg}"
    );
    // The program's own failure is not sudo's.
    assert!(sudo_refusal("/usr/bin/docker", "Error: No such container: x").is_none());
}

/// sudo's command runs as root, on a pty in a session of its own: a timeout must
/// still end it (SIGTERM, which sudo relays), not only sudo.
#[test]
fn a_timeout_ends_the_command_sudo_runs() {
    if !nix::unistd::geteuid().is_root() || crate::runtime::access::find_on_path("sudo").is_none() {
        eprintln!("SKIPPED: needs root and sudo");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let err = Cmd::new("sh")
        .args(["-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
        .arg(&pidfile)
        .via_sudo(Vec::new())
        .timeout(Duration::from_millis(1500))
        .output()
        .unwrap_err();
    assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
    assert!(
        gone,
        "the command sudo ran (pid {pid}) outlived the timeout"
    );
}

#[test]
fn a_command_runs_as_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = Cmd::new("id")
        .args(["-u"])
        .run_as(Identity {
            uid: nobody.uid.as_raw(),
            gid: nobody.gid.as_raw(),
            groups: vec![nobody.gid.as_raw()],
            name: nobody.name.clone(),
            home: nobody.dir.clone(),
        })
        .output()
        .unwrap();
    assert_eq!(out.trim(), nobody.uid.to_string());
}

#[test]
fn large_stderr_does_not_block_stdout() {
    let out = Cmd::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do echo noise >&2; i=$((i+1)); done; echo done",
        ])
        .output()
        .unwrap();
    assert_eq!(out.trim(), "done");
}
