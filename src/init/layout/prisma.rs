//! Where an app's Prisma schema and migrations live, and whether a database's ledger matches them.

/// A Prisma schema init found: where, and the migrations folder it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrismaSchema {
    /// The schema file or folder, relative to the app directory.
    pub schema: String,
    /// The migrations folder, relative to the app directory.
    pub migrations: String,
    /// How it was found ("package.json prisma.schema", "prisma.config.ts", "found").
    pub how: String,
}

/// `prisma.config.ts`'s `schema: "..."` and `migrations: { path: "..." }`.
pub fn prisma_config_paths(text: &str) -> (Option<String>, Option<String>) {
    let schema =
        regex::Regex::new(r#"(?m)^\s*schema\s*:\s*(?:path\.join\([^,]*,\s*)?["'`]([^"'`]+)["'`]"#)
            .expect("a valid regex");
    let migrations =
        regex::Regex::new(r#"migrations\s*:\s*\{[^}]*?path\s*:\s*["'`]([^"'`]+)["'`]"#)
            .expect("a valid regex");
    (
        schema.captures(text).map(|c| c[1].to_string()),
        migrations.captures(text).map(|c| c[1].to_string()),
    )
}

/// package.json's `"prisma": { "schema": "..." }`.
pub fn package_json_schema(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("prisma")?.get("schema")?.as_str().map(str::to_string)
}

/// Joins a path written in a file in `base` (relative to the app directory) to a clean
/// relative path; None when it leaves the app directory.
pub fn join_relative(base: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The migrations folder to use: a schema declared in package.json or prisma.config.ts
/// wins over one found by looking; among several, the one inside an app service's build
/// context (relative to the app directory), then the shortest path.
pub fn choose_prisma<'a>(
    schemas: &'a [PrismaSchema],
    build_contexts: &[String],
) -> Option<&'a PrismaSchema> {
    let in_context = |s: &PrismaSchema| {
        build_contexts.iter().any(|c| {
            c.is_empty()
                || c == "."
                || s.schema
                    .starts_with(&format!("{}/", c.trim_end_matches('/')))
        })
    };
    schemas.iter().min_by_key(|s| {
        (
            s.how == "found",
            !in_context(s),
            s.schema.matches('/').count(),
            s.schema.clone(),
        )
    })
}

/// How the migrations folder compares with the ledger's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerMatch {
    Ok(String),
    /// Works, but something is off.
    Warn(String),
    /// A rollback would not find its down migrations.
    Fail(String),
}

/// Compares the migrations the ledger records as applied with the folders in
/// `migrations_dir` (None: the folder does not exist).
pub fn ledger_matches(applied: &[String], folders: Option<&[String]>, dir: &str) -> LedgerMatch {
    let Some(folders) = folders else {
        return if applied.is_empty() {
            LedgerMatch::Warn(format!(
                "{dir} does not exist and the ledger is empty (no migration applied yet)"
            ))
        } else {
            LedgerMatch::Fail(format!(
                "{dir} does not exist, but the ledger records {} applied migration(s) (newest {})",
                applied.len(),
                applied.last().map(String::as_str).unwrap_or("")
            ))
        };
    };
    if applied.is_empty() {
        return LedgerMatch::Ok(format!(
            "{} migration folder(s) in {dir}; the ledger is empty (none applied yet)",
            folders.len()
        ));
    }
    let missing: Vec<&String> = applied.iter().filter(|a| !folders.contains(a)).collect();
    if missing.is_empty() {
        LedgerMatch::Ok(format!(
            "all {} applied migration(s) have their folder in {dir}",
            applied.len()
        ))
    } else if missing.len() == applied.len() {
        LedgerMatch::Fail(format!(
            "none of the {} migration(s) the ledger records (e.g. {}) has a folder in {dir}: it is not this app's migrations folder",
            applied.len(),
            missing[0]
        ))
    } else {
        LedgerMatch::Warn(format!(
            "{} of {} applied migration(s) have no folder in {dir} (e.g. {}): squashed or renamed migrations have no down.sql",
            missing.len(),
            applied.len(),
            missing[0]
        ))
    }
}
