use super::*;

fn c(name: &str) -> String {
    format!("{name:0<40}")
}

#[test]
fn tag_names_are_namespaced_by_environment() {
    let mut git = GitConfig::default();
    let at: Timestamp = "2026-11-29T10:20:30Z".parse().unwrap();
    assert_eq!(
        TagNames::from_config(&git).dated(at),
        "stable-20261129-102030"
    );
    git.environment = Some("production".into());
    let names = TagNames::from_config(&git);
    assert_eq!(names.stable_tag, "production/latest-stable");
    assert_eq!(names.dated(at), "production/stable-20261129-102030");
}

/// The proposal's table: v1.0 ok; v1.1..v1.4 fail -> always v1.0; v1.5 ok -> moves.
#[test]
fn the_proposals_failure_table() {
    let mut failed = HashSet::new();
    let mut stable = None;
    let mut previous = None;
    for (version, healthy) in [
        ("a10", true),
        ("a11", false),
        ("a12", false),
        ("a13", false),
        ("a14", false),
        ("a15", true),
        ("a16", false),
    ] {
        let current = c(version);
        if healthy {
            stable = Some(current.clone());
        } else {
            let target = rollback_target(&TargetInputs {
                current: current.clone(),
                latest_stable: stable.clone(),
                previous: previous.clone(),
                failed: failed.clone(),
                requested: None,
            });
            let expect = if version == "a16" { c("a15") } else { c("a10") };
            assert_eq!(
                target,
                Target::Commit {
                    commit: expect,
                    reason: "latest-stable".into()
                },
                "{version}"
            );
            failed.insert(current.clone());
        }
        // After a rollback the stable release runs again.
        previous = stable.clone().or(Some(current));
    }
}

#[test]
fn stable_release_failing_itself_means_manual_intervention() {
    let t = rollback_target(&TargetInputs {
        current: c("a10"),
        latest_stable: Some(c("a10")),
        previous: Some(c("a09")),
        ..Default::default()
    });
    assert!(
        matches!(&t, Target::None { reason } if reason.contains("manual intervention")),
        "{t:?}"
    );
}

#[test]
fn without_stable_the_previous_running_commit_not_head_minus_one() {
    let t = rollback_target(&TargetInputs {
        current: c("b3"),
        previous: Some(c("b1")),
        ..Default::default()
    });
    assert_eq!(
        t,
        Target::Commit {
            commit: c("b1"),
            reason: "no stable release yet: the commit that was running before this deploy".into()
        }
    );
    // ... unless that one failed too, or is the current one.
    let mut failed = HashSet::new();
    failed.insert(c("b1"));
    assert!(matches!(
        rollback_target(&TargetInputs {
            current: c("b3"),
            previous: Some(c("b1")),
            failed,
            ..Default::default()
        }),
        Target::None { .. }
    ));
    assert!(matches!(
        rollback_target(&TargetInputs {
            current: c("b3"),
            previous: Some(c("b3")),
            ..Default::default()
        }),
        Target::None { .. }
    ));
    assert!(matches!(
        rollback_target(&TargetInputs {
            current: c("b3"),
            ..Default::default()
        }),
        Target::None { .. }
    ));
}

#[test]
fn explicit_request_wins_unless_it_failed() {
    let mut failed = HashSet::new();
    failed.insert(c("x2"));
    let base = TargetInputs {
        current: c("x3"),
        latest_stable: Some(c("x1")),
        failed,
        ..Default::default()
    };
    let ok = rollback_target(&TargetInputs {
        requested: Some(c("x0")),
        ..base.clone()
    });
    assert_eq!(
        ok,
        Target::Commit {
            commit: c("x0"),
            reason: "requested".into()
        }
    );
    assert!(matches!(
        rollback_target(&TargetInputs {
            requested: Some(c("x2")),
            ..base.clone()
        }),
        Target::None { .. }
    ));
    assert!(matches!(
        rollback_target(&TargetInputs {
            requested: Some(c("x3")),
            ..base
        }),
        Target::None { .. }
    ));
}

#[test]
fn a_stable_release_that_failed_later_is_not_a_target() {
    let mut failed = HashSet::new();
    failed.insert(c("s1"));
    let t = rollback_target(&TargetInputs {
        current: c("s2"),
        latest_stable: Some(c("s1")),
        failed,
        ..Default::default()
    });
    assert!(matches!(t, Target::None { .. }));
}

#[test]
fn the_newer_stable_mark_wins_and_a_local_one_is_never_moved_back() {
    let mark = |commit: &str, at: i64| StableMark {
        object: format!("tag-{commit}"),
        commit: c(commit),
        marked_at: at,
    };
    let (old, new) = (mark("v1", 100), mark("v2", 200));
    // The push of v2 failed: the remote still has v1.
    let d = reconcile_stable("latest-stable", Some(&new), Some(&old));
    assert!(d.restore_local && d.push, "{d:?}");
    assert!(d.note.unwrap().contains("the local one wins"));
    // Another server marked v2 since: ours moves forward, nothing is pushed.
    let d = reconcile_stable("latest-stable", Some(&old), Some(&new));
    assert!(!d.restore_local && !d.push);
    assert!(d.note.unwrap().contains("moved forward"));
    // The remote has none: ours stands and is pushed.
    let d = reconcile_stable("latest-stable", Some(&old), None);
    assert!(!d.restore_local && d.push);
    // Equal, or only the remote has one: nothing to say.
    assert_eq!(reconcile_stable("t", Some(&old), Some(&old)).note, None);
    assert_eq!(reconcile_stable("t", None, Some(&old)).note, None);
}

#[test]
fn same_second_suffixes_sort_newest_first() {
    let mut v = vec!["stable-1-2", "stable-1", "stable-1-10", "stable-1-3"];
    v.sort_by(|a, b| natural_desc(a, b));
    assert_eq!(
        v,
        vec!["stable-1-10", "stable-1-3", "stable-1-2", "stable-1"]
    );
}
