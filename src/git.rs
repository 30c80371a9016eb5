//! Stable releases in git: annotated `stable-<UTC time>` tags, the moving `latest-stable`
//! tag, the rollback target (a pure function: a failed commit is never a target), and
//! reverting the work tree. Shells out to the user's `git` with their credentials.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use jiff::Timestamp;
use serde::Serialize;

use crate::config::GitConfig;
use crate::process::{Cmd, ProcessError};

/// Variables that would point git at another repository than the app's.
const FOREIGN_GIT_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];
/// Local git commands are quick; network ones get longer.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
const NETWORK_TIMEOUT: Duration = Duration::from_secs(300);

/// The tag names of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagNames {
    /// The moving tag, e.g. `latest-stable` or `production/latest-stable`.
    pub stable_tag: String,
    /// The prefix of the dated tags, e.g. `stable-` or `production/stable-`.
    pub prefix: String,
}

impl TagNames {
    pub fn from_config(git: &GitConfig) -> TagNames {
        let ns = git
            .environment
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| format!("{e}/"))
            .unwrap_or_default();
        TagNames {
            stable_tag: format!("{ns}{}", git.stable_tag),
            prefix: format!("{ns}{}", git.stable_prefix),
        }
    }

    /// The dated tag for `at`: `<prefix>YYYYMMDD-HHMMSS` (UTC).
    pub fn dated(&self, at: Timestamp) -> String {
        let stamp = at
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%Y%m%d-%H%M%S");
        format!("{}{stamp}", self.prefix)
    }
}

/// The app's git work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    remote: String,
    names: TagNames,
    push: bool,
}

/// One commit, as shown in reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CommitLine {
    pub sha: String,
    pub subject: String,
}

/// A stable tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StableTag {
    pub tag: String,
    pub commit: String,
    /// When the tag was made (the tagger date).
    pub tagged_at: String,
    pub subject: String,
    /// True for the newest dated tag on the commit `latest-stable` points at.
    pub latest: bool,
}

/// What `mark_stable` did.
#[derive(Debug, Clone, Serialize)]
pub struct Marked {
    pub tag: String,
    pub stable_tag: String,
    pub commit: String,
    pub pushed: bool,
    /// Why the push did not happen or failed; the local tags stay either way.
    pub push_error: Option<String>,
}

impl Repo {
    /// The repository whose work tree contains `dir`.
    pub fn open(dir: &Path, git: &GitConfig) -> anyhow::Result<Repo> {
        let repo = Repo {
            dir: dir.to_owned(),
            remote: git.remote.clone(),
            names: TagNames::from_config(git),
            push: git.push,
        };
        let inside = repo.run(["rev-parse", "--is-inside-work-tree"]);
        if let Err(ProcessError::Failed { stderr_tail, .. }) = &inside {
            if let Some(refusal) = crate::ownership::explain_refusal(dir, stderr_tail) {
                return Err(refusal);
            }
        }
        match inside {
            Ok(out) if out.trim() == "true" => Ok(repo),
            Ok(_) | Err(ProcessError::Failed { .. }) => bail!(
                "{} is not inside a git work tree; stable releases need the app's git repository (the directory of stablehand.toml)",
                dir.display()
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub fn names(&self) -> &TagNames {
        &self.names
    }

    /// `git` in the work tree, with the environment cleaned of variables that would
    /// redirect it, and no interactive prompts (a deploy must not hang on one).
    fn git(&self) -> Cmd {
        // As root in a tree another user owns: git runs as that owner (src/ownership.rs).
        let mut cmd = crate::ownership::git_in(&self.dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .timeout(LOCAL_TIMEOUT)
            .not_found_hint("install git (apt-get install git)");
        for key in FOREIGN_GIT_ENV {
            cmd = cmd.env_remove(key);
        }
        cmd
    }

    /// A local git command (no network): it runs even after an interrupt, since reading
    /// the repository and putting the code back are how an interrupted deploy ends
    /// cleanly.
    fn run<I, S>(&self, args: I) -> Result<String, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.git().cleanup().args(args).output()
    }

    /// The full sha of `rev` (a commit, tag or branch).
    pub fn resolve(&self, rev: &str) -> anyhow::Result<String> {
        let out = self
            .run([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ])
            .map_err(|_| anyhow::anyhow!("{rev:?} is not a commit in {}", self.dir.display()))?;
        Ok(out.trim().to_string())
    }

    /// The text of a file (relative to the app directory) in `commit`'s tree, or None
    /// when the tree has no such file.
    pub fn file_at(&self, commit: &str, path: &Path) -> anyhow::Result<Option<String>> {
        let spec = format!("{commit}:./{}", path.display());
        match self.run(["cat-file", "-e", &spec]) {
            Ok(_) => Ok(Some(self.run(["cat-file", "-p", &spec])?)),
            Err(ProcessError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The names of the directories directly under `dir` (relative to the app
    /// directory) in `commit`'s tree; empty when the tree has no such directory.
    pub fn dirs_at(&self, commit: &str, dir: &Path) -> anyhow::Result<Vec<String>> {
        let spec = format!("{}/", dir.display().to_string().trim_end_matches('/'));
        let out = self.run(["ls-tree", "-d", "--name-only", commit, "--", &spec])?;
        Ok(out
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The commit checked out now (works on a detached HEAD too).
    pub fn head(&self) -> anyhow::Result<String> {
        self.resolve("HEAD")
    }

    /// The commit `latest-stable` points at, if the tag exists locally.
    pub fn latest_stable(&self) -> anyhow::Result<Option<String>> {
        let tag = format!("refs/tags/{}", self.names.stable_tag);
        match self.run([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{tag}^{{commit}}"),
        ]) {
            Ok(out) => Ok(Some(out.trim().to_string())),
            Err(ProcessError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The backup id recorded in the `latest-stable` tag's message, if any.
    pub fn latest_stable_backup(&self) -> anyhow::Result<Option<String>> {
        let message = self.run([
            "for-each-ref",
            "--format=%(contents)",
            &format!("refs/tags/{}", self.names.stable_tag),
        ])?;
        Ok(message
            .lines()
            .find_map(|l| l.strip_prefix("backup: "))
            .map(str::trim)
            .filter(|id| !id.is_empty() && *id != "none")
            .map(str::to_string))
    }

    fn tag_exists(&self, name: &str) -> anyhow::Result<bool> {
        match self.run([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/tags/{name}"),
        ]) {
            Ok(_) => Ok(true),
            Err(ProcessError::Failed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Arguments that give git an identity when the user has none configured
    /// (annotated tags need a tagger).
    fn identity(&self) -> Vec<String> {
        let has = |key: &str| {
            self.run(["config", "--get", key])
                .map(|v| !v.trim().is_empty())
                .unwrap_or(false)
        };
        let mut args = Vec::new();
        if !has("user.name") {
            args.extend(["-c".to_string(), "user.name=stablehand".to_string()]);
        }
        if !has("user.email") {
            args.extend([
                "-c".to_string(),
                "user.email=stablehand@localhost".to_string(),
            ]);
        }
        args
    }

    /// Tags `rev` as stable: a new dated annotated tag and the moving `latest-stable`,
    /// both recording the commit, the time and the pre-deploy backup; then pushes both
    /// in one atomic push (forcing only the moving tag). A failed push leaves the local
    /// tags and is reported in `push_error`.
    pub fn mark_stable(
        &self,
        rev: &str,
        backup_id: Option<&str>,
        now: Timestamp,
    ) -> anyhow::Result<Marked> {
        let commit = self.resolve(rev)?;
        let base = self.names.dated(now);
        let mut tag = base.clone();
        let mut n = 2;
        while self.tag_exists(&tag)? {
            tag = format!("{base}-{n}");
            n += 1;
        }
        let message = format!(
            "stable release {tag}\n\ncommit: {commit}\nmarked-at: {}\nbackup: {}\nmarked-by: stablehand {}\n",
            now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            backup_id.unwrap_or("none"),
            env!("CARGO_PKG_VERSION"),
        );
        let identity = self.identity();
        self.git()
            .args(&identity)
            .args(["tag", "--annotate", "--message", &message, &tag, &commit])
            .output()
            .with_context(|| format!("creating tag {tag}"))?;
        self.git()
            .args(&identity)
            .args([
                "tag",
                "--annotate",
                "--force",
                "--message",
                &message,
                &self.names.stable_tag,
                &commit,
            ])
            .output()
            .with_context(|| format!("moving tag {}", self.names.stable_tag))?;

        let mut marked = Marked {
            tag: tag.clone(),
            stable_tag: self.names.stable_tag.clone(),
            commit,
            pushed: false,
            push_error: None,
        };
        if !self.push {
            marked.push_error = Some("not pushed: git.push = false".into());
            return Ok(marked);
        }
        if let Err(e) = self.push_stable(&[tag.clone()]) {
            marked.push_error = Some(e);
        } else {
            marked.pushed = true;
        }
        Ok(marked)
    }

    /// The dated stable tags, newest first.
    pub fn stable_tags(&self) -> anyhow::Result<Vec<StableTag>> {
        let latest = self.latest_stable()?;
        let out = self.run([
            "for-each-ref",
            "--format=%(refname:strip=2)%00%(*objectname)%00%(objectname)%00%(creatordate:iso-strict)%00%(*subject)%00%(subject)",
            &format!("refs/tags/{}*", self.names.prefix),
        ])?;
        let mut tags: Vec<StableTag> = out
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\0').collect();
                if f.len() < 6 {
                    return None;
                }
                // Annotated tags peel to their commit (%(*...)); lightweight ones are the commit.
                let (commit, subject) = if f[1].is_empty() {
                    (f[2], f[5])
                } else {
                    (f[1], f[4])
                };
                Some(StableTag {
                    tag: f[0].to_string(),
                    commit: commit.to_string(),
                    tagged_at: f[3].to_string(),
                    subject: subject.to_string(),
                    latest: false,
                })
            })
            .collect();
        // Names carry the UTC time (and a suffix for same-second marks): newest first.
        tags.sort_by(|a, b| {
            b.tagged_at
                .cmp(&a.tagged_at)
                .then_with(|| natural_desc(&a.tag, &b.tag))
        });
        if let Some(latest) = latest {
            if let Some(t) = tags.iter_mut().find(|t| t.commit == latest) {
                t.latest = true;
            }
        }
        Ok(tags)
    }

    /// Pushes the dated tags `dated` and the moving tag in one atomic push (forcing only
    /// the moving tag); the error says how to push them by hand.
    fn push_stable(&self, dated: &[String]) -> Result<(), String> {
        let mut refspecs: Vec<String> = dated
            .iter()
            .map(|t| format!("refs/tags/{t}:refs/tags/{t}"))
            .collect();
        refspecs.push(format!(
            "+refs/tags/{0}:refs/tags/{0}",
            self.names.stable_tag
        ));
        self.git()
            .timeout(NETWORK_TIMEOUT)
            .args(["push", "--atomic", "--porcelain", &self.remote])
            .args(&refspecs)
            .output()
            .map(drop)
            .map_err(|e| {
                format!(
                    "pushing the tags to remote {:?} failed: {e}\n  the tags exist locally; push them with: git push {} {} && git push --force {} {}",
                    self.remote,
                    self.remote,
                    dated.join(" "),
                    self.remote,
                    self.names.stable_tag
                )
            })
    }

    /// Fetches tags from the remote (the moving tag reconciled: see `fetch_branch`).
    pub fn fetch_tags(&self) -> anyhow::Result<StableSync> {
        self.fetch_reconciling(&[])
            .with_context(|| format!("fetching tags from remote {:?}", self.remote))
    }

    /// Fetches `branch` and every tag from the remote. Dated tags and the user's own
    /// tags follow the remote; `latest-stable` follows it only when the remote's mark is
    /// newer: a local mark whose push failed is newer, kept, and pushed again (see
    /// `reconcile_stable`). What happened to it is in the returned note.
    pub fn fetch_branch(&self, branch: &str) -> anyhow::Result<StableSync> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{}/{branch}", self.remote);
        self.fetch_reconciling(&[refspec])
            .with_context(|| format!("fetching {branch} and tags from remote {:?}", self.remote))
    }

    fn fetch_reconciling(&self, refspecs: &[String]) -> anyhow::Result<StableSync> {
        let local_ref = format!("refs/tags/{}", self.names.stable_tag);
        let remote_ref = format!("refs/stablehand/remote/{}", self.names.stable_tag);
        let local = self.stable_mark(&local_ref)?;
        // The remote's moving tag also lands beside ours (a glob: absent is no error).
        self.git()
            .timeout(NETWORK_TIMEOUT)
            .args(["fetch", "--tags", "--force", "--quiet", &self.remote])
            .args(refspecs)
            .arg(format!("+{local_ref}*:{remote_ref}*"))
            .output()?;
        let remote = self.stable_mark(&remote_ref)?;
        self.run(["update-ref", "-d", &remote_ref])?;
        let decision = reconcile_stable(&self.names.stable_tag, local.as_ref(), remote.as_ref());
        let mut note = decision.note;
        if decision.restore_local {
            let local = local.as_ref().expect("restore_local implies a local mark");
            self.run(["update-ref", &local_ref, &local.object])?;
        }
        if decision.push {
            let commit = local.as_ref().map(|l| l.commit.clone()).unwrap_or_default();
            let dated: Vec<String> = self
                .run([
                    "tag",
                    "--list",
                    &format!("{}*", self.names.prefix),
                    "--points-at",
                    &commit,
                ])?
                .lines()
                .map(str::to_string)
                .collect();
            let pushed = match self.push_stable(&dated) {
                Ok(()) => "; pushed it again: the remote has it now".to_string(),
                Err(e) => format!("; pushing it again failed too, the next deploy retries: {e}"),
            };
            note = note.map(|n| format!("{n}{pushed}"));
        }
        if let Some(n) = &note {
            tracing::warn!("{n}");
        }
        Ok(StableSync { note })
    }

    /// The mark a stable tag ref holds: tag object, commit, tagger time.
    fn stable_mark(&self, reference: &str) -> anyhow::Result<Option<StableMark>> {
        let out = self.run([
            "for-each-ref",
            "--format=%(objectname)%00%(*objectname)%00%(taggerdate:unix)",
            reference,
        ])?;
        Ok(out.lines().next().and_then(|line| {
            let f: Vec<&str> = line.split('\0').collect();
            (f.len() == 3).then(|| StableMark {
                object: f[0].to_string(),
                // A lightweight tag is the commit itself.
                commit: if f[1].is_empty() { f[0] } else { f[1] }.to_string(),
                marked_at: f[2].parse().unwrap_or(0),
            })
        }))
    }

    /// The remote this repository deploys from.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The remote's default branch (`origin/HEAD`), asked of the remote when unknown.
    pub fn default_branch(&self) -> anyhow::Result<String> {
        let local = self.run([
            "symbolic-ref",
            "--quiet",
            "--short",
            &format!("refs/remotes/{}/HEAD", self.remote),
        ]);
        if let Ok(name) = local {
            if let Some(branch) = name.trim().strip_prefix(&format!("{}/", self.remote)) {
                return Ok(branch.to_string());
            }
        }
        let out = self
            .git()
            .timeout(NETWORK_TIMEOUT)
            .args(["ls-remote", "--symref", &self.remote, "HEAD"])
            .output()
            .with_context(|| format!("asking remote {:?} for its default branch", self.remote))?;
        out.lines()
            .find_map(|l| l.strip_prefix("ref: refs/heads/"))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "remote {:?} did not name a default branch; set git.branch",
                    self.remote
                )
            })
    }

    /// The commits in `current` that are not in `target`, newest first: what a rollback
    /// to `target` reverts.
    pub fn commits_between(&self, target: &str, current: &str) -> anyhow::Result<Vec<CommitLine>> {
        let out = self.run(["log", "--format=%H%x00%s", &format!("{target}..{current}")])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\0'))
            .map(|(sha, subject)| CommitLine {
                sha: sha.to_string(),
                subject: subject.to_string(),
            })
            .collect())
    }

    /// Tracked files with local changes (untracked files are left alone by a reset).
    pub fn local_changes(&self) -> anyhow::Result<Vec<String>> {
        let out = self.run(["status", "--porcelain=v1", "--untracked-files=no"])?;
        Ok(out
            .lines()
            .filter(|l| l.len() > 3)
            .map(|l| l[3..].to_string())
            .collect())
    }

    /// Moves the work tree to `target` (`git reset --hard`). Refuses on local changes to
    /// tracked files, naming them, unless `discard` is set. Runs even after an
    /// interrupt: putting the code back is how an interrupted deploy refuses cleanly.
    pub fn reset_hard(&self, target: &str, discard: bool) -> anyhow::Result<()> {
        let commit = self.resolve(target)?;
        let changes = self.local_changes()?;
        if !changes.is_empty() && !discard {
            bail!(
                "the work tree in {} has local changes to {} tracked file(s): {}; commit or stash them, or set git.discard_local_changes = true to let stablehand discard them",
                self.dir.display(),
                changes.len(),
                changes.join(", ")
            );
        }
        self.run(["reset", "--hard", "--quiet", &commit])
            .with_context(|| format!("resetting the work tree to {commit}"))?;
        Ok(())
    }

    /// True in a shallow clone (history before the boundary is missing).
    pub fn is_shallow(&self) -> anyhow::Result<bool> {
        Ok(self.run(["rev-parse", "--is-shallow-repository"])?.trim() == "true")
    }
}

/// Orders "stable-X-10" after "stable-X-9" (newest first).
fn natural_desc(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| {
        let (base, n) = match s.rsplit_once('-') {
            Some((base, n)) if n.len() < 4 && n.chars().all(|c| c.is_ascii_digit()) => {
                (base.to_string(), n.parse::<u32>().unwrap_or(0))
            }
            _ => (s.to_string(), 1),
        };
        (base, n)
    };
    key(b).cmp(&key(a))
}

/// What a fetch did to the local moving stable tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StableSync {
    /// Said when the local and the remote tag differed, and which one won.
    pub note: Option<String>,
}

/// A stable tag as one repository holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableMark {
    /// The tag object (or the commit, for a lightweight tag).
    pub object: String,
    pub commit: String,
    /// When it was marked (the tagger time, seconds since the epoch; 0 when unknown).
    pub marked_at: i64,
}

/// What to do after a fetch: which moving tag stands locally, and whether to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableDecision {
    /// Put the local mark back (the fetch moved the tag to an older remote mark).
    pub restore_local: bool,
    /// Push the local mark (the remote has none, or an older one).
    pub push: bool,
    pub note: Option<String>,
}

/// Which `latest-stable` wins when the local and the remote differ: the newer mark. A
/// stable release is never moved backwards by a fetch: a local mark whose push failed is
/// newer than the remote's, so it stays and is pushed again; a newer mark on the remote
/// (another server, or a mark by hand) moves the local tag forward, and says so.
pub fn reconcile_stable(
    tag: &str,
    local: Option<&StableMark>,
    remote: Option<&StableMark>,
) -> StableDecision {
    let same = StableDecision {
        restore_local: false,
        push: false,
        note: None,
    };
    let when = |m: &StableMark| {
        jiff::Timestamp::from_second(m.marked_at)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|_| "an unknown time".into())
    };
    match (local, remote) {
        (None, _) => same,
        (Some(l), None) => StableDecision {
            restore_local: false,
            push: true,
            note: Some(format!(
                "{tag}: the remote has none; the local one ({}, marked {}) stands",
                short(&l.commit),
                when(l)
            )),
        },
        (Some(l), Some(r)) if l.object == r.object || l.commit == r.commit => same,
        (Some(l), Some(r)) if l.marked_at > r.marked_at => StableDecision {
            restore_local: true,
            push: true,
            note: Some(format!(
                "{tag}: the local one ({}, marked {}) is newer than the remote's ({}, marked {}), whose push had failed: the local one wins",
                short(&l.commit),
                when(l),
                short(&r.commit),
                when(r)
            )),
        },
        (Some(l), Some(r)) => StableDecision {
            restore_local: false,
            push: false,
            note: Some(format!(
                "{tag}: moved forward from {} (marked {}) to the remote's newer mark {} (marked {})",
                short(&l.commit),
                when(l),
                short(&r.commit),
                when(r)
            )),
        },
    }
}

/// What the rollback target is decided from. Commits are full shas.
#[derive(Debug, Clone, Default)]
pub struct TargetInputs {
    /// The commit running now (the one that failed its gate).
    pub current: String,
    /// Where `latest-stable` points, if it exists.
    pub latest_stable: Option<String>,
    /// The commit that was running before this deploy, as the deploy recorded it.
    pub previous: Option<String>,
    /// Commits known to have failed a health gate.
    pub failed: HashSet<String>,
    /// A target the user asked for (`rollback --to REF`), resolved to a commit.
    pub requested: Option<String>,
}

/// Where a rollback goes, and why; or why it cannot go anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Commit { commit: String, reason: String },
    None { reason: String },
}

/// Decides the rollback target. Never a commit known to have failed; `latest-stable`
/// first; the commit running before the deploy when no stable release exists yet; an
/// explicit request only when it has not failed. When the current commit is the stable
/// one, there is nowhere to go: manual intervention.
pub fn rollback_target(i: &TargetInputs) -> Target {
    if let Some(req) = &i.requested {
        if i.failed.contains(req) {
            return Target::None {
                reason: format!(
                    "the requested target {} failed a health gate before; pick another commit",
                    short(req)
                ),
            };
        }
        if *req == i.current {
            return Target::None {
                reason: format!(
                    "the requested target {} is the commit running now",
                    short(req)
                ),
            };
        }
        return Target::Commit {
            commit: req.clone(),
            reason: "requested".into(),
        };
    }
    if let Some(stable) = &i.latest_stable {
        if *stable == i.current {
            return Target::None {
                reason: format!(
                    "the stable release {} itself is unhealthy; there is no earlier proven release to return to: manual intervention",
                    short(stable)
                ),
            };
        }
        if i.failed.contains(stable) {
            return Target::None {
                reason: format!(
                    "the stable release {} has failed a health gate since it was marked; manual intervention",
                    short(stable)
                ),
            };
        }
        return Target::Commit {
            commit: stable.clone(),
            reason: "latest-stable".into(),
        };
    }
    match &i.previous {
        Some(prev) if *prev != i.current && !i.failed.contains(prev) => Target::Commit {
            commit: prev.clone(),
            reason: "no stable release yet: the commit that was running before this deploy".into(),
        },
        _ => Target::None {
            reason: "there is no stable release yet and no earlier running commit that has not failed: manual intervention (mark a release stable with `stablehand stable mark REF`, or roll back with --to)".into(),
        },
    }
}

/// The first `n` characters of a commit sha (or all of a shorter one), for display.
pub fn abbrev(sha: &str, n: usize) -> &str {
    &sha[..sha.len().min(n)]
}

fn short(sha: &str) -> &str {
    abbrev(sha, 12)
}

#[cfg(test)]
mod tests;
