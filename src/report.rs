//! What commands print: a human view on stdout (tables, summaries) or, with `--json`,
//! one JSON document on stdout. Errors go to stderr (and as JSON to stdout with `--json`).

mod backups;
mod deploys;
mod restores;
mod setup;

use indicatif::HumanBytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::backup::catalog::{Catalog, Listing};
use crate::backup::manifest::Manifest;
use crate::backup::{Created, PruneOutcome, Verified};
pub use backups::*;
pub use deploys::*;
pub use restores::*;
pub use setup::*;

use crate::printer::Printer;

/// Prints an error with its whole chain, and a JSON error document with `--json`.
pub fn error(out: &mut Printer, err: &anyhow::Error, exit_code: i32) {
    // After an interrupt, what it cut short is not the cause: say "interrupted".
    let text = match crate::process::interruption_in(err) {
        Some(cause) => format!("interrupted: {cause}"),
        None => format!("{err:#}"),
    };
    let text = crate::redact::redact_text(&text);
    if out.json() {
        out.document(&serde_json::json!({
            "ok": false,
            "exit_code": exit_code,
            "error": text,
        }));
    }
    tell!(out, "error: {text}");
}

/// "3h ago", "2d ago".
pub fn age(at: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second() - at.as_second();
    match secs {
        s if s < 0 => "in the future".into(),
        s if s < 90 => format!("{s}s ago"),
        s if s < 90 * 60 => format!("{}m ago", s / 60),
        s if s < 36 * 3600 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

fn short_time(at: Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn commit7(m: &Manifest) -> String {
    m.git_commit
        .as_deref()
        .map(|c| crate::git::abbrev(c, 7).to_string())
        .unwrap_or_else(|| "-".into())
}

fn verified_cell(m: &Manifest) -> String {
    match &m.verification {
        Some(v) => format!("{} {}", v.method, age(v.at, Timestamp::now())),
        None => "no".into(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}
