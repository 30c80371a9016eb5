//! Errors that point at the file, line and column, with secrets masked.

use std::path::Path;

use super::ConfigError;

pub(crate) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    if e.message().contains("missing field `database`") {
        return ConfigError::Invalid {
            path: path.to_owned(),
            location: String::new(),
            key: "database".into(),
            message: "the [database] section is missing: it names the database a deploy backs up first and rolls back with the code (mode, service, user, name); run `stablehand init` to write a config from this directory, or add the section by hand (docs/configuration.md)".into(),
        };
    }
    let (line, column, snippet) = match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            let src = mask_secret_value(text.lines().nth(line - 1).unwrap_or(""));
            let src = src.as_str();
            let width = (span.end.saturating_sub(span.start)).clamp(1, src.len().max(1));
            let snippet = format!(
                "  {line:>4} | {src}\n       | {}{}",
                " ".repeat(column - 1),
                "^".repeat(width.min(src.len().saturating_sub(column - 1).max(1)))
            );
            (line, column, snippet)
        }
        None => (1, 1, String::new()),
    };
    let mut message = e.message().trim().to_string();
    if let Some(hint) = secret_key_hint(&message) {
        message.push_str(&hint);
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
        snippet,
    }
}

/// A hint for an unknown key that is a secret put where a reference belongs.
pub(crate) fn secret_key_hint(message: &str) -> Option<String> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    if matches!(
        key,
        "slack_webhook" | "slack_webhook_url" | "webhook_url" | "webhook"
    ) {
        return Some(format!(
            "\n  secrets never go in the config file: put the URL in an environment variable and name it with `{}_env` (or a file, with `{}_file`)",
            if key.starts_with("slack") { "slack_webhook" } else { "webhook_url" },
            if key.starts_with("slack") { "slack_webhook" } else { "webhook_url" }
        ));
    }
    if matches!(
        key,
        "secret_access_key" | "access_key_id" | "aws_secret_access_key" | "aws_access_key_id"
    ) {
        return Some(format!(
            "\n  secrets never go in the config file: put it in an environment variable and name it with `{}_env`",
            key.trim_start_matches("aws_")
        ));
    }
    None
}

/// A config line as shown in errors: values of secret-looking keys and URL passwords masked.
pub(crate) fn mask_secret_value(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let key = lower.split('=').next().unwrap_or("");
    if ["pas", "pwd", "secret", "token", "key"]
        .iter()
        .any(|w| key.contains(w))
    {
        if let Some(eq) = line.find('=') {
            return format!("{}= \"****\"", &line[..eq]);
        }
    }
    crate::redact::redact_text(line)
}

/// Where `section.key` is written in `text` (1-based line and column), falling back to
/// the section's header; None when neither appears. In an array of tables, only the `nth` (0-based) `[[section]]` table is looked at: an
/// error in the second `[[backup.remote]]` points at that table.
pub(crate) fn locate_in(
    text: &str,
    section: &str,
    nth: Option<usize>,
    key: &str,
) -> Option<(usize, usize)> {
    let mut current = String::new();
    let mut tables_seen = 0;
    let mut header = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(name) = line.strip_prefix('[') {
            current = name
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if current == section && name.starts_with('[') {
                tables_seen += 1;
            }
            // The header's own table, or (in an array) the nth of them.
            let wanted = nth.is_none_or(|n| tables_seen == n + 1);
            if current == section && wanted && header.is_none() {
                header = Some((i + 1, indent + 1));
            }
            if !wanted {
                current.clear();
            }
            continue;
        }
        if current == section {
            let name = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if name == key && line.contains('=') {
                return Some((i + 1, indent + 1));
            }
        }
    }
    header
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}
