//! Manual `stablehand restore` against a real PostgreSQL (issue 15 point 6): it takes the
//! deploy lock, refuses while a deploy journal is unfinished, reports the writes made
//! since the backup before the confirmation, and runs the health gate after starting
//! the app (exit 0 healthy, 12 not).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::require_pg;
use crate::support::{free_port, App};

/// An HTTP server on 127.0.0.1 answering every request with 200 "ok".
fn healthy_endpoint() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

fn config(port: u16) -> String {
    format!(
        "\n[runtime]\nstop = \"echo stopped >> events.log\"\nstart = \"echo started >> events.log\"\n\
         [health]\nconsecutive = 1\nstable_for = \"0s\"\ntimeout = \"2s\"\ninterval = \"200ms\"\n\
         [[health.http]]\nurl = \"http://127.0.0.1:{port}/health\"\n"
    )
}

#[test]
fn manual_restore_is_locked_refused_mid_deploy_reports_writes_and_gates_the_app() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let port = healthy_endpoint();
    let app = App::direct(&pg.url(&db), &config(port));
    let id = app.backup();
    pg.psql(
        &db,
        "insert into notes (user_id, body) select 1, 'new ' || g from generate_series(1, 7) g",
    );
    std::thread::sleep(Duration::from_millis(1200));
    let state_dir = app.path().join(".stablehand");

    // A deploy holds the lock: refused (exit 10), nothing touched.
    {
        let _held = stablehand::lock::AppLock::try_acquire(&state_dir, "deploy").unwrap();
        let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
        assert_eq!(out.status.code(), Some(10), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds the lock") && err.contains("nothing was changed"),
            "{err}"
        );
    }
    // An unfinished deploy journal: refused until `recover`.
    stablehand::journal::Journal::new("deploy", "0123456789abcdef")
        .save(&state_dir)
        .unwrap();
    let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stablehand recover"));
    std::fs::remove_file(state_dir.join("journal.json")).unwrap();
    assert_eq!(
        pg.psql(&db, "select count(*) from notes where body like 'new %'"),
        "7",
        "nothing was restored"
    );

    // Healthy after the restore: exit 0, the writes reported first, the gate passed.
    let out = app
        .cmd()
        .args(["--json", "restore", &id, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row(s) were inserted, updated or deleted"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["writes_since_backup"].as_u64().unwrap() >= 7, "{v:#}");
    assert_eq!(v["gate"]["passed"], true, "{v:#}");
    assert_eq!(v["app_healthy"], true);
    assert_eq!(
        std::fs::read_to_string(app.path().join("events.log")).unwrap(),
        "stopped\nstarted\n"
    );

    // Unhealthy after the restore: exit 12, with what to do.
    let dead = free_port();
    app.edit_config(|c| c.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{dead}")));
    let out = app.cmd().args(["restore", &id, "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(12), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MANUAL INTERVENTION REQUIRED"), "{err}");
    assert!(err.contains("did not pass the health gate"), "{err}");
}
