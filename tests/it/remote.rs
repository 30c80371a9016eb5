//! Offsite backups against a real S3 endpoint on 127.0.0.1 (moto's server, one per test)
//! and a directory remote: upload in the same pass, list, verify, restore from the
//! remote, retention per remote, sync, an interrupted upload, encryption with real age
//! keys, and credentials that never show up anywhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use age::secrecy::ExposeSecret;

use crate::require_pg;
use crate::support::{unique, wait_for, App, Moto};

/// The secret half of the test credentials: it must never appear in any output or file.
fn secret() -> String {
    format!("s3cr3t-{}", unique("never-logged"))
}

/// A direct-mode app whose backups also go to bucket `bucket` on `moto`.
fn app_with_remote(url: &str, moto: &Moto, bucket: &str, extra_remote: &str, extra: &str) -> App {
    moto.create_bucket(bucket);
    let mut app = App::direct(
        url,
        &format!(
            "{extra}\n[[backup.remote]]\nname = \"s3\"\nurl = \"s3://{bucket}/app\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\ntimeout = \"3s\"\n{extra_remote}",
            moto.endpoint()
        ),
    );
    app.env.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    app.env.push(("AWS_SECRET_ACCESS_KEY".into(), secret()));
    app
}

fn rows(pg: &crate::support::Pg, db: &str) -> String {
    pg.psql(
        db,
        "select (select count(*) from users) || '/' || (select count(*) from notes)",
    )
}

#[test]
fn backups_go_offsite_in_the_same_pass_and_come_back_from_there() {
    let pg = require_pg!();
    let Some(moto) = Moto::start() else { return };
    let db = pg.sample_db();
    let bucket = unique("bkt").replace('_', "-");
    let app = app_with_remote(
        &pg.url(&db),
        &moto,
        &bucket,
        "keep_last = 2\n",
        "[backup]\nkeep_last = 5\n",
    );
    let secret = app
        .env
        .iter()
        .find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1
        .clone();

    let out = app
        .cmd()
        .args(["-vv", "--json", "backup"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    let upload = &v["backup"]["uploads"][0];
    assert_eq!(upload["remote"], "s3", "{v:#}");
    // Not encrypted: the remote copy is the same bytes, hashed in the same pass.
    assert_eq!(upload["sha256"], v["backup"]["sha256"]);
    assert_eq!(upload["size_bytes"], v["backup"]["size_bytes"]);
    let keys = moto.keys(&bucket);
    assert!(keys.contains(&format!("app/{id}.dump.zst")), "{keys:?}");
    assert!(
        keys.contains(&format!("app/{id}.manifest.json")),
        "{keys:?}"
    );
    let local = fs::read(app.backup_dir().join(format!("{id}.dump.zst"))).unwrap();
    assert_eq!(moto.get(&bucket, &format!("app/{id}.dump.zst")), local);

    let listed = app.json(&["backup", "list", "--remote", "s3"]);
    assert_eq!(listed["backups"][0]["id"], id.as_str(), "{listed:#}");
    assert_eq!(listed["incomplete"], serde_json::json!([]));
    let verified = app.json(&["backup", "verify", "--remote", "s3"]);
    assert_eq!(verified[0]["ok"], true, "{verified:#}");

    // A restore needs nothing but the bucket: from the remote into a new database.
    let target = unique("from_s3");
    let restored = app.json(&[
        "restore",
        &id,
        "--from",
        "s3",
        "--target-db",
        &target,
        "--yes",
    ]);
    assert_eq!(restored["method"], "target", "{restored:#}");
    assert_eq!(rows(pg, &target), rows(pg, &db));
    assert!(
        !fs::read_dir(app.backup_dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".fetch")),
        "the downloaded copy is removed"
    );

    // Retention per remote: the remote keeps 2, the local policy 5.
    for _ in 0..2 {
        app.backup();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let listed = app.json(&["backup", "list", "--remote", "s3"]);
    assert_eq!(listed["backups"].as_array().unwrap().len(), 2, "{listed:#}");
    assert_eq!(
        app.json(&["backup", "list"])["backups"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Exact names: a backup made in the same second as the first is `<id>_2`.
    let keys = moto.keys(&bucket);
    assert!(
        !keys.contains(&format!("app/{id}.dump.zst"))
            && !keys.contains(&format!("app/{id}.manifest.json")),
        "the oldest copy is gone from the remote, data and manifest: {keys:?}"
    );

    // A directory remote, added later: `backup sync` uploads what it lacks, 0600.
    let nas = app.path().join("nas");
    fs::create_dir(&nas).unwrap();
    app.edit_config(|config| {
        format!(
            "{config}\n[[backup.remote]]\nname = \"nas\"\nurl = \"file://{}\"\n",
            nas.display()
        )
    });
    let synced = app.json(&["backup", "sync", "--remote", "nas"]);
    assert_eq!(synced.as_array().unwrap().len(), 3, "{synced:#}");
    assert!(synced.as_array().unwrap().iter().all(|s| s["ok"] == true));
    for f in fs::read_dir(&nas).unwrap() {
        let f = f.unwrap();
        assert_eq!(
            f.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            f.path()
        );
    }
    assert_eq!(
        app.json(&["backup", "sync", "--remote", "nas"]),
        serde_json::json!([])
    );
    assert_eq!(
        app.json(&["backup", "list", "--remote", "nas"])["backups"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The credentials appear nowhere: output, manifests local and remote.
    assert!(
        !stdout.contains(&secret) && !stderr.contains(&secret),
        "secret in the output"
    );
    for f in fs::read_dir(app.backup_dir()).unwrap() {
        let p = f.unwrap().path();
        if p.to_string_lossy().ends_with(".json") {
            assert!(!fs::read_to_string(&p).unwrap().contains(&secret), "{p:?}");
        }
    }
    for k in moto.keys(&bucket).iter().filter(|k| k.ends_with(".json")) {
        assert!(!String::from_utf8_lossy(&moto.get(&bucket, k)).contains(&secret));
    }
}

#[test]
fn an_interrupted_upload_leaves_no_manifest_and_is_reported() {
    let pg = require_pg!();
    let Some(moto) = Moto::start() else { return };
    let db = pg.create_db("bigish");
    // Enough barely-compressible data that the upload is still running when the endpoint
    // freezes (several 8 MiB parts).
    pg.psql(
        &db,
        "create table blobs (id serial primary key, body text);
         insert into blobs (body) select md5(random()::text) || md5(random()::text) || md5(random()::text) from generate_series(1, 700000);",
    );
    let bucket = unique("bkt").replace('_', "-");

    for required in [false, true] {
        let app = app_with_remote(
            &pg.url(&db),
            &moto,
            &format!("{bucket}-{required}"),
            "",
            &format!("[backup]\nremote_required = {required}\n"),
        );
        let child = app
            .std_cmd()
            .args(["backup"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Freeze the endpoint once an upload is under way.
        wait_for(Duration::from_secs(60), || {
            (moto.uploads_in_progress(&format!("{bucket}-{required}")) > 0).then_some(())
        })
        .expect("an upload started");
        moto.freeze();
        let out = child.wait_with_output().unwrap();
        moto.thaw();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "required={required}: {stderr}");
        let listed = app.json(&["backup", "list", "--remote", "s3"]);
        assert_eq!(
            listed["backups"],
            serde_json::json!([]),
            "no manifest on the remote: {listed:#}"
        );
        let local = app.json(&["backup", "list"]);
        if required {
            assert!(stderr.contains("backup failed at stage upload"), "{stderr}");
            assert_eq!(local["backups"], serde_json::json!([]), "nothing recorded");
            app.assert_no_backup_left();
        } else {
            assert!(
                stderr.contains("is stored locally, but its upload failed")
                    && stderr.contains("backup sync"),
                "{stderr}"
            );
            assert_eq!(
                local["backups"].as_array().unwrap().len(),
                1,
                "the local backup stands"
            );
            // Once the endpoint is back, `backup sync` completes the offsite copy.
            let synced = app.json(&["backup", "sync"]);
            assert_eq!(synced[0]["ok"], true, "{synced:#}");
            assert_eq!(
                app.json(&["backup", "list", "--remote", "s3"])["backups"]
                    .as_array()
                    .unwrap()
                    .len(),
                1
            );
        }
    }
}

#[test]
fn encrypted_copies_round_trip_and_a_wrong_key_is_refused() {
    let pg = require_pg!();
    let Some(moto) = Moto::start() else { return };
    let db = pg.sample_db();
    let bucket = unique("bkt").replace('_', "-");
    let key = age::x25519::Identity::generate();
    let public = key.to_public().to_string();
    let keydir = tempfile::tempdir().unwrap();
    let keyfile = keydir.path().join("backup-key.txt");
    fs::write(&keyfile, key.to_string().expose_secret()).unwrap();
    fs::set_permissions(&keyfile, fs::Permissions::from_mode(0o600)).unwrap();
    let encryption = format!(
        "[backup.encryption]\nrecipients = [\"{public}\"]\nidentity_file = \"{}\"\n",
        keyfile.display()
    );
    let app = app_with_remote(&pg.url(&db), &moto, &bucket, "", &encryption);

    let v = app.json(&["backup"]);
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    assert!(
        v["backup"]["encryption"].is_null(),
        "the local copy stays plain: {v:#}"
    );
    let upload = &v["backup"]["uploads"][0];
    assert_eq!(upload["file"], format!("{id}.dump.zst.age"));
    assert_ne!(
        upload["sha256"], v["backup"]["sha256"],
        "the copy is a different file"
    );
    let stored = moto.get(&bucket, &format!("app/{id}.dump.zst.age"));
    assert!(
        stored.starts_with(b"age-encryption.org/v1"),
        "the remote copy is age-encrypted"
    );
    let manifest =
        String::from_utf8(moto.get(&bucket, &format!("app/{id}.manifest.json"))).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["encryption"]["recipients"], serde_json::json!([public]));
    assert!(
        !manifest.contains("AGE-SECRET-KEY"),
        "never a key in a manifest"
    );

    // Round trip: downloaded, checked, decrypted, restored.
    let target = unique("decrypted");
    app.json(&[
        "restore",
        &id,
        "--from",
        "s3",
        "--target-db",
        &target,
        "--yes",
    ]);
    assert_eq!(rows(pg, &target), rows(pg, &db));
    let tested = app.json(&["backup", "verify", "--remote", "s3", "--restore-test"]);
    assert_eq!(tested[0]["ok"], true, "{tested:#}");

    // A wrong identity: refused, saying which recipients could open it; nothing created.
    let other = age::x25519::Identity::generate();
    fs::write(&keyfile, other.to_string().expose_secret()).unwrap();
    let refused = unique("never");
    let out = app
        .cmd()
        .args([
            "restore",
            &id,
            "--from",
            "s3",
            "--target-db",
            &refused,
            "--yes",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none of the identities")
            && stderr.contains(&public)
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            &format!("select count(*) from pg_database where datname = '{refused}'")
        ),
        "0"
    );

    // encrypt_local: the local copy is encrypted too, and still verifies and restores.
    fs::write(&keyfile, key.to_string().expose_secret()).unwrap();
    app.edit_config(|config| {
        config.replace(
            "[backup.encryption]\n",
            "[backup.encryption]\nencrypt_local = true\n",
        )
    });
    let v = app.json(&["backup"]);
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["backup"]["encryption"]["recipients"],
        serde_json::json!([public])
    );
    let local = fs::read(app.backup_dir().join(format!("{id}.dump.zst"))).unwrap();
    assert!(local.starts_with(b"age-encryption.org/v1"));
    let verified = app.json(&["backup", "verify", &id]);
    assert_eq!(verified[0]["ok"], true, "{verified:#}");
    let target = unique("local_enc");
    app.json(&["restore", &id, "--target-db", &target, "--yes"]);
    assert_eq!(rows(pg, &target), rows(pg, &db));
}
