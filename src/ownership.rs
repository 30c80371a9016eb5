//! Who owns the app's work tree, and what follows when stablehand runs as someone else
//! (root, or a user through sudo), as on servers whose scripts `chown -R` the tree to
//! the deploy user.
//!
//! - git: run as root in a tree owned by another user, git refuses it ("detected
//!   dubious ownership"), rightly: the tree's config and hooks are code its owner
//!   controls. stablehand never trusts such a tree for root (no `safe.directory`): as
//!   root it runs git *as the tree's owner*, with the owner's HOME (their git config,
//!   SSH keys and hooks run with their own rights, as when they run git themselves).
//!   Run as any other user, it leaves git's check alone and, when git refuses, says who
//!   owns the tree, why git refuses and how to fix it.
//! - files: what a run as root writes under `.stablehand/` and the backup directory is
//!   handed to the tree's owner when the command ends (and when the next root run
//!   starts), modes unchanged (backups stay 0600), so the next run as the deploy user
//!   can read and replace it. A run as another user that finds such a file it cannot
//!   use refuses before doing anything, naming the file and the `chown` that fixes it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::Loaded;
use crate::process::{Cmd, Identity};

/// The account behind `uid`, as a process identity (name, groups, home).
fn identity_of(uid: u32) -> Option<Identity> {
    let user = nix::unistd::User::from_uid(uid.into()).ok().flatten()?;
    let name = std::ffi::CString::new(user.name.clone()).ok()?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Some(Identity {
        uid,
        gid: user.gid.as_raw(),
        groups,
        name: user.name,
        home: user.dir,
    })
}

/// A user name for messages (the uid when it has no account).
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The owner of the work tree at `dir` (its top directory).
fn owner_of(dir: &Path) -> Option<u32> {
    std::fs::metadata(dir).ok().map(|m| m.uid())
}

/// `git` for the work tree at `dir`: as the tree's owner when stablehand is root and
/// the tree belongs to another user with an account here; otherwise as ourselves.
pub fn git_in(dir: &Path) -> Cmd {
    let cmd = Cmd::new("git").current_dir(dir);
    if euid() != 0 {
        return cmd;
    }
    match owner_of(dir) {
        Some(owner) if owner != 0 => match identity_of(owner) {
            Some(who) => cmd.run_as(who),
            // No account to run as: git refuses, and `explain_refusal` says why.
            None => cmd,
        },
        _ => cmd,
    }
}

/// When git's stderr is its "dubious ownership" refusal: the error to show instead,
/// naming the tree's owner, the risk and the fix.
pub fn explain_refusal(dir: &Path, stderr: &str) -> Option<anyhow::Error> {
    if !stderr.contains("dubious ownership") {
        return None;
    }
    let me = euid();
    let owner = owner_of(dir).unwrap_or(u32::MAX);
    let (me_name, owner_name) = (user_name(me), user_name(owner));
    let dir = dir.display();
    if me == 0 {
        return Some(anyhow::anyhow!(
            "git refuses the work tree {dir} (\"detected dubious ownership\"): it is owned by {owner_name}, which has no account on this machine, so stablehand (root) cannot run git as the tree's owner, and it never trusts another user's tree for root (its git config and hooks would run as root); give the tree to the deploy user: `chown -R deploy: {dir}`"
        ));
    }
    Some(anyhow::anyhow!(
        "git refuses the work tree {dir} (\"detected dubious ownership\"): it is owned by {owner_name} and stablehand runs as {me_name}; stablehand does not trust it for you, since the tree's git config and hooks, which {owner_name} controls, would run as {me_name}. Run stablehand as {owner_name} (`sudo -u {owner_name} stablehand ...`, or as root, which runs git as the tree's owner), or give the tree to {me_name}: `sudo chown -R {me_name}: {dir}`"
    ))
}

/// The state stablehand keeps on disk: `.stablehand/` and the backup directory.
fn state_paths(loaded: &Loaded) -> Vec<PathBuf> {
    vec![loaded.state_dir(), loaded.backup_dir()]
}

/// Every path under `root` (itself included), not following symlinks.
fn walk(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    out.push(root.to_owned());
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                walk(&e.path(), out);
            }
        }
    }
}

/// Run as root in a tree owned by another user: hands what root owns under
/// `.stablehand/` and the backup directory to the tree's owner (the owner and group of
/// the tree; modes unchanged). Returns how many paths changed hands; never fails the
/// command (a path that cannot be changed is warned about).
pub fn hand_over_state(loaded: &Loaded) -> usize {
    if euid() != 0 {
        return 0;
    }
    let Ok(tree) = std::fs::metadata(&loaded.app_dir) else {
        return 0;
    };
    if tree.uid() == 0 {
        return 0;
    }
    let mut paths = Vec::new();
    for root in state_paths(loaded) {
        walk(&root, &mut paths);
    }
    let mut changed = 0;
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != 0 {
            continue;
        }
        match std::os::unix::fs::lchown(&path, Some(tree.uid()), Some(tree.gid())) {
            Ok(()) => changed += 1,
            Err(e) => tracing::warn!(
                "could not hand {} to the work tree's owner {}: {e}",
                path.display(),
                user_name(tree.uid())
            ),
        }
    }
    changed
}

/// The first path of stablehand's state this user cannot use (read, or also write when
/// `write`), with its owner.
fn first_unusable(loaded: &Loaded, write: bool) -> Option<(PathBuf, u32)> {
    use nix::unistd::{access, AccessFlags};
    let mut paths = Vec::new();
    for root in state_paths(loaded) {
        walk(&root, &mut paths);
    }
    paths.into_iter().find_map(|path| {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
        let mut need = AccessFlags::R_OK;
        if meta.is_dir() {
            need |= AccessFlags::X_OK;
        }
        if write {
            need |= AccessFlags::W_OK;
        }
        access(&path, need).is_err().then(|| (path, meta.uid()))
    })
}

/// Refuses, before anything is done, when a file or directory of stablehand's state is
/// one this user cannot read (or write, when `write`): a run as another user (root,
/// sudo) that was killed before handing its files over leaves those behind.
pub fn check_state_access(loaded: &Loaded, write: bool) -> anyhow::Result<()> {
    // Root reads everything; a user who does not own the tree hears from git instead
    // (the state is the owner's, rightly).
    if euid() == 0 || owner_of(&loaded.app_dir) != Some(euid()) {
        return Ok(());
    }
    if let Some((path, owner)) = first_unusable(loaded, write) {
        let me = user_name(euid());
        let tree_owner = owner_of(&loaded.app_dir)
            .map(user_name)
            .unwrap_or_else(|| me.clone());
        bail!(
            "{} is owned by {} and {me} cannot {} it: a stablehand run as another user (as root, or through sudo) left it, and was stopped before it handed its files to the work tree's owner; give them back with `sudo chown -R {tree_owner}: {} {}`, then run again as {me}",
            path.display(),
            user_name(owner),
            if write { "read and write" } else { "read" },
            loaded.state_dir().display(),
            loaded.backup_dir().display()
        );
    }
    Ok(())
}

/// Doctor's findings: who owns the tree and how git runs there; whether this user can
/// use stablehand's state. (check, Ok(detail) or Err((blocking, detail, fix))).
pub fn doctor_findings(loaded: &Loaded) -> Vec<crate::runtime::access::DoctorFinding> {
    let mut found = Vec::new();
    let me = euid();
    let Some(owner) = owner_of(&loaded.app_dir) else {
        return found;
    };
    let dir = loaded.app_dir.display();
    let (me_name, owner_name) = (user_name(me), user_name(owner));
    let tree = if owner == me {
        Ok(format!("{dir} is owned by {me_name}, who runs stablehand"))
    } else if me == 0 {
        match identity_of(owner) {
            Some(_) => Ok(format!(
                "{dir} is owned by {owner_name}: stablehand (root) runs git as {owner_name} and hands the files it writes in .stablehand/ and the backup directory to {owner_name}"
            )),
            None => Err((
                true,
                format!("{dir} is owned by uid {owner}, which has no account here: git refuses it for root"),
                format!("chown -R deploy: {dir} (the user that deploys)"),
            )),
        }
    } else {
        let probe = git_in(&loaded.app_dir)
            .args(["rev-parse", "--is-inside-work-tree"])
            .timeout(std::time::Duration::from_secs(20))
            .output();
        match probe {
            Ok(_) => Err((
                false,
                format!("{dir} is owned by {owner_name}, not {me_name}, and git trusts it anyway (safe.directory in {me_name}'s git config): its config and hooks run as {me_name}"),
                format!("run stablehand as {owner_name}, or `sudo chown -R {me_name}: {dir}` and drop the safe.directory entry"),
            )),
            Err(crate::process::ProcessError::Failed { stderr_tail, .. })
                if stderr_tail.contains("dubious ownership") =>
            {
                Err((
                    true,
                    format!("{dir} is owned by {owner_name}, not {me_name}: git refuses it (\"detected dubious ownership\")"),
                    format!("run stablehand as {owner_name} (or as root), or `sudo chown -R {me_name}: {dir}`"),
                ))
            }
            Err(_) => Ok(format!("{dir} is owned by {owner_name}")),
        }
    };
    found.push(("work tree owner", tree));
    if me == owner {
        if let Some((path, file_owner)) = first_unusable(loaded, true) {
            found.push((
                "state files",
                Err((
                    true,
                    format!(
                        "{} is owned by {} and {me_name} cannot read and write it",
                        path.display(),
                        user_name(file_owner)
                    ),
                    format!(
                        "sudo chown -R {}: {} {}",
                        owner_name,
                        loaded.state_dir().display(),
                        loaded.backup_dir().display()
                    ),
                )),
            ));
        }
    }
    found
}
