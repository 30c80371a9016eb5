//! Per-commit image retention: every built service image is also tagged
//! `<repository>:sh-<sha12>`, so rolling back to a commit is a re-tag and `up`, not a
//! rebuild. The build order lives in `.stablehand/images.json`; what Docker holds is
//! read from Docker. Deciding what to prune is a pure function.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::access::Docker;
use crate::git::abbrev;

/// Tags stablehand owns start with this.
pub const TAG_PREFIX: &str = "sh-";

/// Splits an image reference into repository and tag (`latest` when none):
/// `registry:5000/app:1.2` -> (`registry:5000/app`, `1.2`).
pub fn split_repo_tag(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The tag of `image` for `commit`: `<repository>:sh-<sha12>`.
pub fn commit_tag(image: &str, commit: &str) -> String {
    format!(
        "{}:{TAG_PREFIX}{}",
        split_repo_tag(image).0,
        abbrev(commit, 12)
    )
}

/// Whether two image references name the same image as Docker resolves them: a missing
/// tag is `latest`, and Docker Hub's `docker.io/` and `library/` prefixes are implied
/// (`busybox` = `busybox:latest` = `docker.io/library/busybox:latest`). A digest
/// (`repo@sha256:...`) is compared as written.
pub fn same_reference(a: &str, b: &str) -> bool {
    normalized_reference(a) == normalized_reference(b)
}

fn normalized_reference(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let (repository, tag) = split_repo_tag(name);
    let repository = repository
        .strip_prefix("docker.io/")
        .or_else(|| repository.strip_prefix("index.docker.io/"))
        .unwrap_or(repository);
    let repository = repository.strip_prefix("library/").unwrap_or(repository);
    match digest {
        Some(digest) => format!("{repository}@{digest}"),
        None => format!("{repository}:{tag}"),
    }
}

/// What to keep and what to remove, by commit (12-character abbreviations).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    pub keep: Vec<String>,
    pub prune: Vec<String>,
}

/// Keeps the `keep` most recently built commits among those with images, plus every
/// protected commit (latest-stable, the running one); prunes the rest. Commits with
/// images but no record of their build count as the oldest.
pub fn plan_prune(
    present: &[String],
    built_oldest_first: &[String],
    keep: usize,
    protected: &[String],
) -> PrunePlan {
    let short = |c: &String| abbrev(c, 12).to_string();
    let protected: Vec<String> = protected.iter().map(short).collect();
    let mut ranked: Vec<String> = present.iter().map(short).collect();
    ranked.sort();
    ranked.dedup();
    // Newest build first; unrecorded ones last (oldest).
    let rank = |c: &String| {
        built_oldest_first
            .iter()
            .rposition(|b| abbrev(b, 12) == c)
            .map_or(-1, |i| i as i64)
    };
    ranked.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    let mut plan = PrunePlan::default();
    let mut kept_recent = 0;
    for commit in ranked {
        if protected.contains(&commit) {
            plan.keep.push(commit);
        } else if kept_recent < keep {
            kept_recent += 1;
            plan.keep.push(commit);
        } else {
            plan.prune.push(commit);
        }
    }
    plan
}

/// The build order of commits, oldest first (`.stablehand/images.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildRecord {
    pub builds: Vec<Build>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Build {
    pub commit: String,
    pub built_at: String,
}

/// Builds remembered; older entries of commits whose images are gone are dropped.
const RECORD_LIMIT: usize = 200;

impl BuildRecord {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("images.json")
    }

    /// Reads the record; a missing one is empty, an unreadable one is an error that says
    /// what to do.
    pub fn load(state_dir: &Path) -> anyhow::Result<BuildRecord> {
        let path = Self::path(state_dir);
        let Some(bytes) = crate::files::read_if_exists(&path)? else {
            return Ok(BuildRecord::default());
        };
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a valid image record; remove it (images then count as oldest for pruning)",
                path.display()
            )
        })
    }

    /// Records a build of `commit` as the newest, atomically.
    pub fn note(state_dir: &Path, commit: &str) -> anyhow::Result<()> {
        let mut record = Self::load(state_dir)?;
        let commit = abbrev(commit, 12).to_string();
        record.builds.retain(|b| b.commit != commit);
        record.builds.push(Build {
            commit,
            built_at: jiff::Timestamp::now().to_string(),
        });
        let excess = record.builds.len().saturating_sub(RECORD_LIMIT);
        record.builds.drain(..excess);
        fs_err::create_dir_all(state_dir)?;
        crate::files::write_file_atomic(
            &Self::path(state_dir),
            &serde_json::to_vec_pretty(&record)?,
        )
    }

    pub fn commits(&self) -> Vec<String> {
        self.builds.iter().map(|b| b.commit.clone()).collect()
    }
}

const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// The image id of a reference, or None when Docker has no such image.
pub fn image_id(docker: &Docker, reference: &str) -> anyhow::Result<Option<String>> {
    let out = docker
        .docker([
            "image",
            "ls",
            "--no-trunc",
            "--format",
            "{{.ID}}",
            reference,
        ])
        .timeout(DOCKER_TIMEOUT)
        // Quick and local: it runs after an interrupt too, to put image names back.
        .cleanup()
        .output()?;
    Ok(out.lines().next().map(|l| l.trim().to_string()))
}

/// Tags `source` (a reference or an image id) as `target`.
pub fn tag(docker: &Docker, source: &str, target: &str) -> anyhow::Result<()> {
    docker
        .docker(["tag", source, target])
        .timeout(DOCKER_TIMEOUT)
        .cleanup()
        .output()
        .with_context(|| format!("tagging {source} as {target}"))?;
    Ok(())
}

/// The commits (12-character) that have an `sh-` tag in `repository`.
pub fn commits_tagged(docker: &Docker, repository: &str) -> anyhow::Result<Vec<String>> {
    let out = docker
        .docker(["image", "ls", "--format", "{{.Tag}}", repository])
        .timeout(DOCKER_TIMEOUT)
        .output()?;
    Ok(out
        .lines()
        .filter_map(|t| t.trim().strip_prefix(TAG_PREFIX))
        .map(str::to_string)
        .collect())
}

/// Removes one tag (never forced: an image a container still uses stays).
pub fn untag(docker: &Docker, reference: &str) -> anyhow::Result<()> {
    docker
        .docker(["image", "rm", reference])
        .timeout(DOCKER_TIMEOUT)
        .output()
        .with_context(|| format!("removing image tag {reference}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repository_and_tag() {
        assert_eq!(split_repo_tag("app_web"), ("app_web", "latest"));
        assert_eq!(split_repo_tag("myorg/api:1.2"), ("myorg/api", "1.2"));
        assert_eq!(
            split_repo_tag("localhost:5000/api"),
            ("localhost:5000/api", "latest")
        );
        assert_eq!(
            split_repo_tag("localhost:5000/api:v3"),
            ("localhost:5000/api", "v3")
        );
        assert_eq!(
            commit_tag("myorg/api:1.2", "0123456789abcdef0123"),
            "myorg/api:sh-0123456789ab"
        );
    }

    #[test]
    fn references_compare_as_docker_resolves_them() {
        assert!(same_reference("busybox", "busybox:latest"));
        assert!(same_reference(
            "busybox",
            "docker.io/library/busybox:latest"
        ));
        assert!(same_reference("acme/api:2", "docker.io/acme/api:2"));
        assert!(same_reference(
            "localhost:5000/api:v3",
            "localhost:5000/api:v3"
        ));
        assert!(!same_reference("acme/api:1", "acme/api:2"));
        assert!(!same_reference("localhost:5000/api", "api"));
        assert!(!same_reference("api@sha256:aa", "api@sha256:bb"));
        assert!(!same_reference("api@sha256:aa", "api:latest"));
        assert!(same_reference("library/api@sha256:aa", "api@sha256:aa"));
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn keeps_the_newest_builds_and_the_protected() {
        let built = s(&["a", "b", "c", "d", "e", "f", "g"]);
        let present = s(&["g", "a", "c", "d", "e", "f", "b", "x"]);
        // keep 3 newest (g, f, e) + protected a; x unrecorded counts as oldest.
        let plan = plan_prune(&present, &built, 3, &s(&["a"]));
        assert_eq!(plan.keep, s(&["g", "f", "e", "a"]));
        assert_eq!(plan.prune, s(&["d", "c", "b", "x"]));
        // A protected commit among the newest does not use up a slot twice.
        let plan = plan_prune(&present, &built, 2, &s(&["f"]));
        assert_eq!(plan.keep, s(&["g", "f", "e"]));
        // Rebuilding an old commit makes it the newest.
        let plan = plan_prune(&s(&["a", "b", "c"]), &s(&["a", "b", "c", "a"]), 1, &[]);
        assert_eq!(plan.keep, s(&["a"]));
    }

    proptest! {
        #[test]
        fn plan_is_a_partition_that_respects_protection(
            present in proptest::collection::vec("[a-f]", 0..8),
            built in proptest::collection::vec("[a-f]", 0..8),
            keep in 1usize..5,
            protected in proptest::collection::vec("[a-f]", 0..3),
        ) {
            let plan = plan_prune(&present, &built, keep, &protected);
            let mut all: Vec<String> = plan.keep.iter().chain(&plan.prune).cloned().collect();
            all.sort();
            let mut want = present.clone();
            want.sort();
            want.dedup();
            prop_assert_eq!(all, want);
            for p in &protected {
                prop_assert!(!plan.prune.contains(p));
            }
            let unprotected_kept = plan.keep.iter().filter(|c| !protected.contains(c)).count();
            prop_assert!(unprotected_kept <= keep);
            if !plan.prune.is_empty() {
                prop_assert_eq!(unprotected_kept, keep);
            }
        }
    }
}
