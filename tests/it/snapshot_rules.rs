//! Snapshots never leak (issue 15 point 4), against the real Docker/Compose stack: a
//! failed code-only deploy drops its snapshot once the rollback is healthy; a deploy
//! whose rollback needs manual intervention keeps it (shown by `status` and `backup
//! list --databases`) until the next successful deploy drops it.

use std::fs;

use crate::deploy::Stack;
use crate::support::git;

#[test]
fn every_deploy_path_drops_its_snapshot_or_keeps_it_under_a_shown_rule() {
    let Some(s) = Stack::fast("snapshot = true\n") else {
        return;
    };
    let v1 = git(&s.dev(), &["rev-parse", "HEAD"]);
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(s.databases_like("appdb__snap_").is_empty());

    // A failed code-only deploy: the database is left alone, the snapshot dropped.
    s.set_healthy(false);
    s.commit("v2: broken health, no migration");
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 11, "{v:#}");
    assert_eq!(v["rollback"]["db"]["action"], "none", "{v:#}");
    assert!(
        s.databases_like("appdb__snap_").is_empty(),
        "the snapshot of a rolled-back code-only deploy is dropped"
    );

    // The stable release itself fails: manual intervention, the snapshot is kept.
    s.set_healthy(true);
    s.commit("v3: healthy again");
    fs::write(s.path().join("flags/broken"), "").unwrap();
    let (code, v) = s.deploy(&["--ref", &v1]);
    assert_eq!(code, 12, "{v:#}");
    let snaps = s.databases_like("appdb__snap_");
    assert_eq!(snaps.len(), 1, "{v:#}");
    assert_eq!(v["rollback"]["kept_snapshot"], snaps[0].as_str(), "{v:#}");
    assert!(v["message"].as_str().unwrap().contains(&snaps[0]));
    let (code, stdout, _) = s.stablehand(&["--json", "status"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let kept = status["kept_databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == snaps[0].as_str())
        .expect("the snapshot is listed");
    assert!(
        kept["note"]
            .as_str()
            .unwrap()
            .contains("the next successful deploy drops it"),
        "{kept:#}"
    );
    let (code, stdout, _) = s.stablehand(&["backup", "list", "--databases"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&snaps[0]) && stdout.contains("manual intervention"),
        "{stdout}"
    );

    // The next successful deploy drops it (and its own).
    fs::remove_file(s.path().join("flags/broken")).unwrap();
    let (code, v) = s.deploy(&[]);
    assert_eq!(code, 0, "{v:#}");
    assert!(s.databases_like("appdb__snap_").is_empty(), "{v:#}");
}
