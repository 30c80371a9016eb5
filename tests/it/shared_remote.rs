//! A remote shared by several servers (issue 15 point 8), against a real PostgreSQL and
//! a directory remote: each server's retention and `latest` consider only its own
//! copies (manifests record the server and app directory that made them; old manifests
//! without it still count as this server's when nothing says otherwise), and a remote
//! manifest whose id or file would resolve outside the scratch directory is refused.

use std::fs;

use crate::require_pg;
use crate::support::App;

fn remote_app(url: &str, remote_dir: &std::path::Path) -> App {
    App::direct(
        url,
        &format!(
            "[[backup.remote]]\nname = \"nas\"\nurl = \"{}\"\nkeep_last = 1\n",
            remote_dir.display()
        ),
    )
}

fn remote_ids(app: &App) -> Vec<String> {
    let v = app.json(&["backup", "list", "--remote", "nas"]);
    v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn edit_manifest(dir: &std::path::Path, id: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(format!("{id}.manifest.json"));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    change(&mut v);
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn servers_sharing_a_remote_prune_and_pick_latest_among_their_own_copies() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let remote = tempfile::tempdir().unwrap();
    // Two servers (two app directories) backing up a database of the same name.
    let a = remote_app(&pg.url(&db), remote.path());
    let b = remote_app(&pg.url(&db), remote.path());
    let a1 = a.backup();
    let a2 = a.backup();
    let b1 = b.backup();
    let b2 = b.backup();
    let mut ids = remote_ids(&a);
    ids.sort();
    let mut want = vec![a2.clone(), b2.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "each server kept its newest copy (keep_last = 1)"
    );
    assert!(!ids.contains(&a1) && !ids.contains(&b1));
    let listed = a.json(&["backup", "list", "--remote", "nas"]);
    assert_eq!(
        listed["others"],
        serde_json::json!([b2.clone()]),
        "{listed:#}"
    );
    let m = &listed["backups"].as_array().unwrap()[0];
    assert!(m["origin"]["host"].is_string(), "{m:#}");

    // `latest` from the remote is this server's own newest copy, not the other's.
    let v = a.json(&["restore", "latest", "--from", "nas", "--yes"]);
    assert_eq!(v["backup"], a2.as_str(), "{v:#}");

    // A manifest written before the origin was recorded still counts as this server's
    // (its backup is in the local directory)...
    edit_manifest(remote.path(), &a2, |v| {
        v.as_object_mut().unwrap().remove("origin");
    });
    let listed = a.json(&["backup", "list", "--remote", "nas"]);
    assert_eq!(
        listed["others"],
        serde_json::json!([b2.clone()]),
        "{listed:#}"
    );
    // ...and one the local directory does not know, of a database another server is
    // recorded backing up, is not taken for this server's.
    let mut legacy: serde_json::Value = serde_json::from_slice(
        &fs::read(remote.path().join(format!("{b2}.manifest.json"))).unwrap(),
    )
    .unwrap();
    legacy.as_object_mut().unwrap().remove("origin");
    legacy["id"] = "legacy_20200101T000000Z".into();
    fs::write(
        remote.path().join("legacy_20200101T000000Z.manifest.json"),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();
    let a3 = a.backup();
    let mut ids = remote_ids(&a);
    ids.sort();
    let mut want = vec![
        a3.clone(),
        b2.clone(),
        "legacy_20200101T000000Z".to_string(),
    ];
    want.sort();
    assert_eq!(ids, want, "a's retention deleted its own a2 only");
    let listed = a.json(&["backup", "list", "--remote", "nas"]);
    let mut others: Vec<String> = listed["others"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    others.sort();
    let mut want = vec![b2.clone(), "legacy_20200101T000000Z".to_string()];
    want.sort();
    assert_eq!(others, want);
}

#[test]
fn a_remote_manifest_naming_a_path_outside_the_scratch_directory_is_refused() {
    let pg = require_pg!();
    let db = pg.sample_db();
    let remote = tempfile::tempdir().unwrap();
    let a = remote_app(&pg.url(&db), remote.path());
    let id = a.backup();
    let template: serde_json::Value = serde_json::from_slice(
        &fs::read(remote.path().join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap();
    for (object, id, file) in [
        ("evil1", "evil1", "../../../outside.dump.zst"),
        ("evil2", "evil2", "/etc/passwd"),
        ("evil3", "../../evil3", "evil3.dump.zst"),
    ] {
        let mut v = template.clone();
        v["id"] = id.into();
        v["file"] = file.into();
        fs::write(
            remote.path().join(format!("{object}.manifest.json")),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
        let out = a
            .cmd()
            .args(["restore", object, "--from", "nas", "--yes"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a plain file name"), "{object}: {err}");
    }
    let listed = a.json(&["backup", "list", "--remote", "nas"]);
    assert_eq!(remote_ids(&a), vec![id.clone()], "{listed:#}");
    let incomplete = listed["incomplete"].to_string();
    assert!(
        incomplete.contains("evil1.manifest.json: refused"),
        "{incomplete}"
    );
    // Nothing was written outside the backup directory.
    assert!(!a.path().join("outside.dump.zst").exists());
    assert!(!a.path().parent().unwrap().join("outside.dump.zst").exists());
}
