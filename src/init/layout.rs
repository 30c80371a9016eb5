//! The decisions `init` makes about an app's layout, as plain functions over plain data:
//! which compose file(s) the server runs, the services of the resolved Compose
//! configuration, which database they create, what the health gate can check, and where
//! the Prisma migrations live. The I/O (running `compose config`, reading files) is in
//! `init.rs`.

mod prisma;
mod services;

use std::collections::BTreeMap;

use serde_norway::Value;

use crate::config::COMPOSE_FILE_NAMES;
pub use prisma::*;
pub use services::*;

/// The compose file(s) init chose, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChoice {
    pub files: Vec<String>,
    /// One line for the output: why these.
    pub reason: String,
    /// Compose files in the directory that were not chosen.
    pub others: Vec<String>,
}

/// Looks like a compose file: `compose*.y(a)ml` or `docker-compose*.y(a)ml`.
pub fn is_compose_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".yml") || lower.ends_with(".yaml"))
        && (lower.starts_with("compose") || lower.starts_with("docker-compose"))
}

/// Named for production: a `prod` or `production` part in the name
/// (`docker-compose.prod.yml`, `docker-compose.production.yml`, `compose.prod.yaml`,
/// `docker-compose-prod.yml`).
pub fn is_production_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let stem = lower
        .strip_suffix(".yml")
        .or_else(|| lower.strip_suffix(".yaml"))
        .unwrap_or(&lower);
    stem.split(['.', '-', '_'])
        .any(|part| part == "prod" || part == "production")
}

/// The override file Compose adds by itself to `default` when no `-f` is given.
fn override_of(default: &str) -> Vec<String> {
    let (stem, _) = default.rsplit_once('.').unwrap_or((default, ""));
    ["yaml", "yml"]
        .iter()
        .map(|ext| format!("{stem}.override.{ext}"))
        .collect()
}

/// Chooses the compose file(s) the way the server runs them: `explicit` (`init --file`);
/// else the file set a deploy workflow passes with `-f` (`workflows`: each workflow's
/// path and the sets found in it, only sets whose files exist); else a file named for
/// production; else Compose's default file (with its override file, which Compose adds
/// by itself). `present`: the compose files in the app directory.
pub fn choose_files(
    explicit: &[String],
    workflows: &[(String, Vec<Vec<String>>)],
    present: &[String],
) -> Option<FileChoice> {
    let others = |chosen: &[String]| {
        present
            .iter()
            .filter(|p| !chosen.contains(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    if !explicit.is_empty() {
        return Some(FileChoice {
            files: explicit.to_vec(),
            reason: "given with --file".into(),
            others: others(explicit),
        });
    }
    let deployish = |path: &str| {
        let lower = path.to_ascii_lowercase();
        lower.contains("deploy") || lower.contains("prod") || lower.contains("release")
    };
    let mut ordered: Vec<&(String, Vec<Vec<String>>)> = workflows.iter().collect();
    ordered.sort_by_key(|(path, _)| (!deployish(path), path.clone()));
    for (path, sets) in ordered {
        // The set with a production-named file first, then the one with most files.
        let best = sets.iter().filter(|s| !s.is_empty()).max_by_key(|s| {
            (
                s.iter().any(|f| is_production_name(f)),
                s.len(),
                std::cmp::Reverse(s.join(" ")),
            )
        });
        if let Some(set) = best {
            let shown = set
                .iter()
                .map(|f| format!("-f {f}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Some(FileChoice {
                files: set.clone(),
                reason: format!("the workflow {path} runs compose {shown}"),
                others: others(set),
            });
        }
    }
    if let Some(prod) = present.iter().find(|p| is_production_name(p)) {
        let files = vec![prod.clone()];
        return Some(FileChoice {
            reason: "its name says production (no deploy workflow names a compose file)".into(),
            others: others(&files),
            files,
        });
    }
    let default = COMPOSE_FILE_NAMES
        .iter()
        .find(|n| present.iter().any(|p| p == *n))?;
    let mut files = vec![default.to_string()];
    if let Some(o) = override_of(default)
        .into_iter()
        .find(|o| present.contains(o))
    {
        files.push(o);
    }
    Some(FileChoice {
        reason: if files.len() > 1 {
            "Compose's default file and its override file (no deploy workflow or production-named file)".into()
        } else {
            "Compose's default file (no deploy workflow or production-named file)".into()
        },
        others: others(&files),
        files,
    })
}

/// The compose file sets a workflow passes: every `docker compose` / `docker-compose`
/// command's `-f F` / `--file F` / `--file=F` arguments (in order, `./` dropped), and a
/// `COMPOSE_FILE` setting. Arguments holding a variable are skipped (they cannot be
/// resolved here).
pub fn compose_file_sets(workflow: &str) -> Vec<Vec<String>> {
    let joined = workflow.replace("\\\r\n", " ").replace("\\\n", " ");
    let clean = |t: &str| {
        t.trim_matches(|c: char| "\"'`();".contains(c))
            .trim_start_matches("./")
            .to_string()
    };
    let mut sets: Vec<Vec<String>> = Vec::new();
    let mut add = |set: Vec<String>| {
        if !set.is_empty() && !sets.contains(&set) {
            sets.push(set);
        }
    };
    for line in joined.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        while i < tokens.len() {
            let t = clean(tokens[i]);
            let start = if t.ends_with("docker-compose") {
                Some(i + 1)
            } else if t.ends_with("docker")
                && tokens.get(i + 1).map(|n| clean(n)) == Some("compose".into())
            {
                Some(i + 2)
            } else {
                None
            };
            let Some(mut j) = start else {
                i += 1;
                continue;
            };
            let mut set = Vec::new();
            while j < tokens.len() {
                let raw = tokens[j];
                if ["&&", "||", ";", "|"].iter().any(|s| raw.starts_with(s)) {
                    break;
                }
                let tok = clean(raw);
                let value = if tok == "-f" || tok == "--file" {
                    j += 1;
                    tokens.get(j).map(|v| clean(v))
                } else {
                    tok.strip_prefix("--file=").map(str::to_string)
                };
                if let Some(v) = value.filter(|v| !v.is_empty() && !v.contains('$')) {
                    set.push(v);
                }
                let last = tokens.get(j).copied().unwrap_or(raw);
                j += 1;
                if last.ends_with(';') {
                    break;
                }
            }
            add(set);
            i = j;
        }
        if let Some(pos) = line.find("COMPOSE_FILE") {
            let rest = line[pos + "COMPOSE_FILE".len()..].trim_start();
            if let Some(value) = rest.strip_prefix([':', '=']) {
                let value = value.trim().trim_matches(['"', '\'']);
                if !value.is_empty() && !value.contains('$') {
                    add(value
                        .split(':')
                        .map(|f| f.trim_start_matches("./").to_string())
                        .collect());
                }
            }
        }
    }
    sets
}

/// Compares the compose files the running containers were created from (their
/// `com.docker.compose.project.config_files` and `...working_dir` labels) with the ones
/// the config names (absolute paths). Err names both.
pub fn running_files_match(
    labels: &[(String, String)],
    expected: &[std::path::PathBuf],
) -> Result<String, String> {
    let canon = |p: std::path::PathBuf| p.canonicalize().unwrap_or(p);
    let expected: Vec<std::path::PathBuf> = expected.iter().cloned().map(canon).collect();
    for (files, working_dir) in labels {
        let running: Vec<std::path::PathBuf> = files
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| canon(std::path::Path::new(working_dir).join(f)))
            .collect();
        if running != expected {
            let show = |v: &[std::path::PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "the running containers were created from {}, but the config names {}",
                show(&running),
                show(&expected)
            ));
        }
    }
    Ok(format!(
        "the running containers come from {}",
        expected
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests;
