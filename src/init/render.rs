//! The config file `init` writes for a detected layout.

use super::*;

pub(super) fn q(s: &str) -> String {
    format!("{s:?}")
}

pub(super) fn list(items: &[String]) -> String {
    items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
}

/// The commented config for what was found (pure).
pub fn render(d: &Detected) -> String {
    let mut t = String::new();
    t.push_str(
        "# stablehand.toml, written by `stablehand init` from what it found in this directory.\n",
    );
    t.push_str("# Every key not written here has a default; see docs/configuration.md.\n");
    if let Some(reason) = &d.compose_reason {
        t.push_str(&format!(
            "# Compose files: {} ({reason}).\n",
            d.compose_files.join(", ")
        ));
        if !d.other_compose_files.is_empty() {
            t.push_str(&format!(
                "#   Also here, not used: {} (`stablehand init --force --file F` to choose).\n",
                d.other_compose_files.join(", ")
            ));
        }
    }
    if let Some(how) = &d.resolved_with {
        t.push_str(&format!("# Services read from {how}.\n"));
    }
    for n in &d.notes {
        t.push_str(&format!("# CHECK: {n}\n"));
    }
    t.push_str("\n[git]\n");
    t.push_str(&format!(
        "remote = {}\n",
        q(d.git_remote.as_deref().unwrap_or("origin"))
    ));
    match &d.git_branch {
        Some(b) => t.push_str(&format!(
            "branch = {}                 # the branch deploys follow\n",
            q(b)
        )),
        None => {
            t.push_str("# branch = \"main\"            # default: the remote's default branch\n")
        }
    }
    if d.git_remote.is_none() {
        t.push_str("push = false                   # no remote to push the stable tags to\n");
    }
    t.push_str("\n[runtime]\n");
    let services = list(&d.app_services);
    if !d.compose_files.is_empty() {
        t.push_str("kind = \"compose\"\n");
        t.push_str(&format!(
            "project = {}             # compose's default for this directory\n",
            q(&d.project)
        ));
        t.push_str(&format!(
            "files = [{}]   # the files the server runs\n",
            list(&d.compose_files)
        ));
        if !d.app_services.is_empty() {
            t.push_str(&format!(
                "services = [{services}]   # rebuilt and restarted by a deploy (never the database)\n"
            ));
        }
        t.push_str("keep_images = 5                # commits whose images are kept for instant rollbacks\n");
    } else {
        t.push_str("# kind = \"command\"\n# build = \"make build\"\n# stop = \"systemctl stop myapp\"\n# start = \"systemctl start myapp\"\n");
    }
    t.push_str("\n[health]\n");
    for line in &d.health_lines {
        t.push_str(&format!("# {line}\n"));
    }
    if !d.app_services.is_empty() {
        t.push_str(&format!(
            "containers = [{services}]   # running, healthy (when they declare a healthcheck), no restart during the window\n"
        ));
    }
    t.push_str("consecutive = 3                # good rounds in a row, then ...\nstable_for = \"20s\"             # ... this long with no failure and no restart\ntimeout = \"120s\"\ninterval = \"2s\"\n");
    for (url, why) in &d.health_urls {
        t.push_str(&format!("[[health.http]]   # {why}\nurl = {}\n", q(url)));
    }
    for url in &d.health_guesses {
        t.push_str(&format!(
            "# [[health.http]]   # CHECK: did not answer during init\n# url = {}\n",
            q(url)
        ));
    }
    if d.health_urls.is_empty() && d.health_guesses.is_empty() && d.app_services.is_empty() {
        t.push_str("# [[health.http]]\n# url = \"http://127.0.0.1:3000/health\"\n");
    }
    t.push_str("\n[database]\n");
    match &d.db_service {
        Some(service) => {
            t.push_str("mode = \"compose\"                # pg_dump/psql/pg_restore run inside the service\n");
            t.push_str(&format!("service = {}\n", q(service)));
            t.push_str(&format!(
                "user = {}   # {}\n",
                q(d.db_user.as_deref().unwrap_or_default()),
                d.db_user_from.as_deref().unwrap_or("")
            ));
            t.push_str(&format!(
                "name = {}   # {}\n",
                q(d.db_name.as_deref().unwrap_or_default()),
                d.db_name_from.as_deref().unwrap_or("")
            ));
        }
        None => {
            t.push_str("mode = \"direct\"\nurl_env = \"DATABASE_URL\"        # the URL (with its password) comes from this variable\n");
        }
    }
    t.push_str(&format!(
        "migrations = {}{}\n",
        q(if d.prisma { "prisma" } else { "none" }),
        if d.prisma {
            "            # _prisma_migrations tells what a deploy applied"
        } else {
            ""
        }
    ));
    if let Some(dir) = &d.migrations_dir {
        t.push_str(&format!(
            "migrations_dir = {}   # {}\n",
            q(dir),
            d.migrations_from.as_deref().unwrap_or("")
        ));
    }
    t.push_str("on_rollback = \"auto\"           # roll the database back only when the deploy changed it\n");
    t.push_str("snapshot = false               # true: instant database rollback (needs room for a copy)\n");
    t.push_str("\n[backup]\ndir = \"backups/database\"\nkeep_last = 10\nkeep_within = \"30d\"\n");
    t.push_str("\n# [notify]\n# slack_webhook_env = \"SLACK_WEBHOOK_URL\"   # the URL itself goes in the environment\n");
    t
}
