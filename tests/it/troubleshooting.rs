//! docs/troubleshooting.md cannot drift from the code.
//!
//! The document marks each entry with a heading that is one code span holding a piece
//! of the message copied verbatim from a string literal in src/ (no placeholders):
//!
//! ```text
//! ### `another deploy or rollback holds the lock`
//! ```
//!
//! A piece that holds a backtick goes in a double-backtick span (`` `x` was not found ``).
//! The test checks both directions:
//! - every marker occurs in a string literal of src/ outside test code, read as the user
//!   sees it (escapes and `\` line continuations resolved);
//! - every error message written in src/ (the string literal that is the first argument
//!   of `bail!`, `anyhow!`, `#[error(...)]` or `UsageError(...)`, directly or through
//!   `format!`) contains some marker, with each `{placeholder}` replaced by a separator so
//!   that a marker never spans one. Exempt: a message that only passes others through
//!   (no letter outside its placeholders), and the few in `NOT_USER_FACING`, each with
//!   the reason no user can hit it.
//!
//! Plain Rust, no Docker or PostgreSQL: the sources are read from the package directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/troubleshooting.md";

/// The shortest marker accepted: shorter pieces would match messages by accident.
const MIN_MARKER: usize = 7;

/// Error messages in src/ that a user cannot make stablehand print: (a piece of the
/// literal, why it cannot be hit). Each piece must still match a message.
const NOT_USER_FACING: &[(&str, &str)] = &[
    (
        "the archive's data is compressed by pg_dump: its blocks cannot be found",
        "a guard in restore::stream::load_own: parallel loaders are only started for \
         archives whose data pg_dump did not compress (stablehand's backups never are)",
    ),
    (
        "refusing to drop the live database",
        "a guard in Database::drop_side_database: every caller passes a `<db>__...` name, \
         and `db drop-kept` refuses any name that is not a kept database before calling it",
    ),
    (
        "--target-db and --in-place exclude each other",
        "clap rejects the pair first (`conflicts_with` in src/cli.rs), so restore() never \
         sees both",
    ),
    (
        "the upload thread panicked",
        "only after a panic in the uploader (a bug); what the user then sees is covered by \
         the `the upload stopped` entry",
    ),
    (
        "the upload was abandoned",
        "the uploader's result when its sender is dropped without Finish; Upload's Drop \
         discards it, and Upload::failure, which would return it, has no caller",
    ),
    (
        "starting age encryption",
        "Encryptor::with_recipients fails only for no recipients or mixed kinds; config \
         validation admits only a non-empty list of X25519 age1 keys",
    ),
    (
        "is not usable",
        "IdentityFile::into_identities fails only for plugin identities; age is built \
         without its `plugin` feature, so IdentityFile::from_file rejects those lines first",
    ),
];

/// A string literal of the source: where it starts and its text as the program sees it.
#[derive(Debug)]
struct Literal {
    start: usize,
    line: usize,
    text: String,
}

/// One source file, scanned.
struct Scanned {
    /// The code with every comment and the inside of every string and char literal
    /// replaced by spaces (same byte offsets, newlines kept): searching it finds code only.
    masked: String,
    literals: Vec<Literal>,
    /// Byte ranges of `#[cfg(test)]` items.
    test_ranges: Vec<(usize, usize)>,
}

impl Scanned {
    fn in_tests(&self, offset: usize) -> bool {
        self.test_ranges
            .iter()
            .any(|&(a, b)| (a..b).contains(&offset))
    }

    /// The literals outside test code.
    fn code_literals(&self) -> impl Iterator<Item = &Literal> {
        self.literals.iter().filter(|l| !self.in_tests(l.start))
    }
}

/// Reads an escape after `\` in a (non-raw) string literal; `i` is just past the `\`.
fn escape(b: &[u8], i: &mut usize, out: &mut String) {
    let c = b[*i];
    *i += 1;
    match c {
        b'n' => out.push('\n'),
        b't' => out.push('\t'),
        b'r' => out.push('\r'),
        b'0' => out.push('\0'),
        b'\\' => out.push('\\'),
        b'"' => out.push('"'),
        b'\'' => out.push('\''),
        b'x' => {
            let hex = std::str::from_utf8(&b[*i..*i + 2]).unwrap_or("3f");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?') as char);
            *i += 2;
        }
        b'u' => {
            let close = *i + b[*i..].iter().position(|&c| c == b'}').unwrap_or(0);
            let hex = std::str::from_utf8(&b[*i + 1..close]).unwrap_or("3f");
            out.push(
                u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or('?'),
            );
            *i = close + 1;
        }
        // A line continuation: the newline and the next line's leading whitespace vanish.
        b'\n' => {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        }
        other => out.push(other as char),
    }
}

/// Splits Rust source into code, comments and literals (enough of the lexer for this).
fn scan(code: &str) -> Scanned {
    let b = code.as_bytes();
    let mut masked = b.to_vec();
    let mut literals = Vec::new();
    let blank = |masked: &mut Vec<u8>, from: usize, to: usize| {
        for m in &mut masked[from..to] {
            if *m != b'\n' {
                *m = b' ';
            }
        }
    };
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut i = 0;
    while i < b.len() {
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = code[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut masked, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (start, mut depth) = (i, 0);
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut masked, start, i);
            }
            // Raw strings: r"..", r#".."#, br"..".
            b'r' | b'b'
                if !ident_before && {
                    let p = if b[i] == b'b' { i + 1 } else { i };
                    b.get(p) == Some(&b'r')
                        && b[p + 1..]
                            .iter()
                            .find(|&&c| c != b'#')
                            .is_some_and(|&c| c == b'"')
                } =>
            {
                let start = i;
                let p = if b[i] == b'b' { i + 1 } else { i };
                let hashes = b[p + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = p + 1 + hashes + 1;
                let closing = format!("\"{}", "#".repeat(hashes));
                let close = open + code[open..].find(&closing).expect("a closed raw string");
                literals.push(Literal {
                    start,
                    line: line_of(start),
                    text: code[open..close].to_string(),
                });
                blank(&mut masked, open, close);
                i = close + closing.len();
            }
            b'"' => {
                // A byte string's `b` prefix is left in the code; the literal starts at `"`.
                let start = i;
                let mut text = String::new();
                let mut bytes = Vec::new();
                i += 1;
                while b[i] != b'"' {
                    if b[i] == b'\\' {
                        text.push_str(&String::from_utf8_lossy(&bytes));
                        bytes.clear();
                        i += 1;
                        escape(b, &mut i, &mut text);
                    } else {
                        bytes.push(b[i]);
                        i += 1;
                    }
                }
                text.push_str(&String::from_utf8_lossy(&bytes));
                blank(&mut masked, start + 1, i);
                literals.push(Literal {
                    start,
                    line: line_of(start),
                    text,
                });
                i += 1;
            }
            // A char literal ('x', '\n', '\u{..}'); otherwise a lifetime or a label.
            b'\'' => {
                let start = i;
                if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while b[i] != b'\'' {
                        i += 1;
                    }
                    blank(&mut masked, start + 1, i);
                    i += 1;
                } else {
                    let width = code[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if b.get(i + 1 + width) == Some(&b'\'') {
                        blank(&mut masked, start + 1, i + 1 + width);
                        i += 2 + width;
                    } else {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    let masked = String::from_utf8(masked).expect("masking replaces whole characters with spaces");
    let test_ranges = test_items(&masked);
    Scanned {
        masked,
        literals,
        test_ranges,
    }
}

/// The byte ranges of items marked `#[cfg(test)]`: to the `;` or the brace closing the
/// item's body (braces counted in masked code, so literals cannot unbalance them).
fn test_items(masked: &str) -> Vec<(usize, usize)> {
    let b = masked.as_bytes();
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(n) = masked[from..].find("#[cfg(test)]") {
        let start = from + n;
        let mut i = start + "#[cfg(test)]".len();
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b';' if depth == 0 => break,
                b'{' => depth += 1,
                // The item's body closes (or the enclosing block, for a bodiless item).
                b'}' if depth <= 1 => break,
                b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        ranges.push((start, i + 1));
        from = i + 1;
    }
    ranges
}

/// A message as the user sees it, with each `{placeholder}` turned into U+0001 (so no
/// marker can span one) and `{{`/`}}` into braces.
fn shown(format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push('\u{1}');
            }
            c => out.push(c),
        }
    }
    out
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// An error message written in src/.
#[derive(Debug)]
struct ErrorMessage {
    at: String,
    text: String,
}

/// The string literals after `bail!(`, `anyhow!(`, `#[error(` and `UsageError(`
/// (through an optional `format!(`), outside test code.
fn error_messages(file: &str, s: &Scanned) -> Vec<ErrorMessage> {
    let mut found = Vec::new();
    for opener in ["bail!(", "anyhow!(", "#[error(", "UsageError("] {
        for (n, _) in s.masked.match_indices(opener) {
            if s.in_tests(n) {
                continue;
            }
            let rest = &s.masked[n + opener.len()..];
            let mut at = n + opener.len() + (rest.len() - rest.trim_start().len());
            if let Some(after) = s.masked[at..].strip_prefix("format!(") {
                at += "format!(".len() + (after.len() - after.trim_start().len());
            }
            if let Some(lit) = s.literals.iter().find(|l| l.start == at) {
                found.push(ErrorMessage {
                    at: format!("{file}:{}", lit.line),
                    text: lit.text.clone(),
                });
            }
        }
    }
    found
}

/// The markers of the document: (line number, message piece).
fn markers(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        let Some(rest) = line.strip_prefix("### ") else {
            continue;
        };
        let rest = rest.trim_end();
        if !rest.starts_with('`') {
            continue;
        }
        let piece = if let Some(inner) = rest.strip_prefix("``").and_then(|r| r.strip_suffix("``"))
        {
            // CommonMark drops one space on each side when both are there.
            match inner.strip_prefix(' ').and_then(|i| i.strip_suffix(' ')) {
                Some(trimmed) => trimmed,
                None => inner,
            }
        } else {
            rest.strip_prefix('`')
                .and_then(|r| r.strip_suffix('`'))
                .filter(|inner| !inner.contains('`'))
                .unwrap_or_else(|| {
                    panic!(
                        "{DOC}:{}: a heading starting with ` must be exactly one code span: {line}",
                        n + 1
                    )
                })
        };
        out.push((n + 1, piece.to_string()));
    }
    out
}

#[test]
fn troubleshooting_doc_matches_the_error_messages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(DOC)).unwrap();
    let mut code_literals = Vec::new();
    let mut messages = Vec::new();
    for path in rust_files(&root.join("src")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let scanned = scan(&text);
        let file = path.strip_prefix(root).unwrap().display().to_string();
        messages.extend(error_messages(&file, &scanned));
        code_literals.extend(scanned.code_literals().map(|l| shown(&l.text)));
    }
    // Guards against a scanner that silently finds nothing.
    assert!(
        messages.len() > 60,
        "only {} error messages found in src/: the scanner is broken",
        messages.len()
    );
    let markers = markers(&doc);
    assert!(
        markers.len() > 60,
        "only {} markers in {DOC}",
        markers.len()
    );

    // Each marker is well formed, unique, and still in the code.
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, piece) in &markers {
        if piece.chars().count() < MIN_MARKER || piece.contains(['{', '}', '…']) {
            problems.push(format!(
                "{DOC}:{line}: `{piece}`: a marker is at least {MIN_MARKER} characters of literal text, without placeholders"
            ));
        } else if !seen.insert(piece.as_str()) {
            problems.push(format!(
                "{DOC}:{line}: `{piece}` is a second entry for the same message"
            ));
        } else if !code_literals.iter().any(|l| l.contains(piece.as_str())) {
            problems.push(format!(
                "{DOC}:{line}: `{piece}` no longer occurs in any string of src/: update or remove the entry"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The allow-list stays true: each entry still names a message of src/.
    for (piece, why) in NOT_USER_FACING {
        assert!(
            messages.iter().any(|m| m.text.contains(piece)),
            "NOT_USER_FACING names {piece:?} ({why}), which no error message in src/ contains any more: remove it"
        );
    }

    // Every error message a user can hit has an entry.
    let missing: Vec<String> = messages
        .iter()
        .filter(|m| {
            let text = shown(&m.text);
            let passes_through = !text
                .split('\u{1}')
                .any(|part| part.chars().any(|c| c.is_alphabetic()));
            !passes_through
                && !NOT_USER_FACING.iter().any(|(p, _)| m.text.contains(p))
                && !markers
                    .iter()
                    .any(|(_, piece)| text.contains(piece.as_str()))
        })
        .map(|m| format!("  {}: {:?}", m.at, m.text))
        .collect();
    assert!(
        missing.is_empty(),
        "error messages with no entry in {DOC}; add an entry to docs/troubleshooting.md \
         (a heading `### `<a piece of the message copied verbatim>`` with its cause and fix), \
         or, for a message no user can hit, a reason in NOT_USER_FACING in {}:\n{}",
        file!(),
        missing.join("\n")
    );
}

#[test]
fn troubleshooting_doc_lists_every_exit_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join(DOC)).unwrap();
    let lib = std::fs::read_to_string(root.join("src/commands/mod.rs")).unwrap();
    let body = lib
        .split_once("pub enum Exit {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .expect("src/commands/mod.rs has `pub enum Exit { ... }`")
        .0;
    let codes: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().split_once(" = "))
        .map(|(_, code)| code.trim_end_matches(','))
        .collect();
    assert!(
        codes.len() >= 8,
        "exit codes found in src/commands/mod.rs: {codes:?}"
    );
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|code| !doc.lines().any(|l| l.starts_with(&format!("| {code} |"))))
        .collect();
    assert!(
        missing.is_empty(),
        "exit codes with no row (`| CODE | ...`) in the table of {DOC}: {missing:?}"
    );
}

/// The scanner itself, on the shapes that trip naive ones.
#[test]
fn troubleshooting_scanner_reads_literals_as_the_user_sees_them() {
    let code = r##"
fn f() -> anyhow::Result<()> {
    let _c = '"'; let _l: &'static str = "x"; let _b = b"PGDMP";
    // bail!("in a comment");
    bail!(
        "first line, \
         continued \"quoted\" {name:?} {{braces}}"
    );
    Err(UsageError(format!("dropping {name} is for good")).into())
}
#[cfg(test)]
mod tests {
    fn g() { bail!("only in a test {"); }
}
"##;
    let s = scan(code);
    let messages = error_messages("x.rs", &s);
    let texts: Vec<String> = messages.iter().map(|m| shown(&m.text)).collect();
    assert_eq!(
        texts,
        vec![
            "first line, continued \"quoted\" \u{1} {braces}".to_string(),
            "dropping \u{1} is for good".to_string(),
        ]
    );
    assert_eq!(messages[0].at, "x.rs:6");
    assert!(s
        .code_literals()
        .all(|l| !l.text.contains("only in a test")));
    let doc = "### `a marker`\n### `` `x` was not found ``\n### plain heading\n";
    assert_eq!(
        markers(doc),
        vec![
            (1, "a marker".to_string()),
            (2, "`x` was not found".to_string())
        ]
    );
}
