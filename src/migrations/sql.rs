//! Reading a migration script without running it: its statements, what each one
//! destroys, and whether it can run inside a transaction. A small lexer that knows
//! PostgreSQL's quoting (strings, E-strings, quoted identifiers, dollar quotes, nested
//! comments), not a parser: it recognises the statements a down migration consists of
//! and treats anything else as harmless DDL, which the schema fingerprint check covers.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word, folded to lower case as PostgreSQL does.
    Word(String),
    /// A quoted identifier, exactly as written.
    Ident(String),
    /// A string constant (its text does not matter here).
    Str,
    Punct(char),
    /// A psql meta-command (a line starting with a backslash).
    Meta(String),
}

/// Something a statement destroys the data of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destroys {
    /// `DROP TABLE`, `TRUNCATE` or `DELETE FROM` (every row counts).
    Rows { table: Name },
    /// `ALTER TABLE ... DROP [COLUMN]` (the column's values count).
    Column { table: Name, column: Name },
}

impl std::fmt::Display for Destroys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destroys::Rows { table } => write!(f, "table {}", table.display),
            Destroys::Column { table, column } => {
                write!(f, "column {}.{}", table.display, column.display)
            }
        }
    }
}

/// An SQL name: how it reads (`public.User`) and how to write it in a query
/// (`"public"."User"`, quoted as PostgreSQL resolved it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Name {
    pub display: String,
    #[serde(skip)]
    pub sql: String,
}

/// What a script does, as far as a rollback cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptFacts {
    pub statements: usize,
    /// Objects whose data the script destroys, in order.
    pub destroys: Vec<Destroys>,
    /// Statements that cannot run inside a transaction block (their first words).
    pub non_transactional: Vec<String>,
    /// Why the script must not be run by stablehand at all, if it must not.
    pub refused: Vec<String>,
}

/// Analyses a script.
pub fn analyse(sql: &str) -> ScriptFacts {
    let mut facts = ScriptFacts::default();
    let (tokens, metas) = lex(sql);
    for m in metas {
        facts.refused.push(format!(
            "it contains the psql meta-command `{m}`, which stablehand does not run (down.sql must be plain SQL, as `prisma db execute` expects)"
        ));
    }
    for statement in tokens.split(|t| *t == Token::Punct(';')) {
        if statement.is_empty() {
            continue;
        }
        facts.statements += 1;
        classify(statement, &mut facts);
    }
    facts
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

fn words(s: &[Token], n: usize) -> Vec<&str> {
    s.iter()
        .take(n)
        .map(|t| word(Some(t)).unwrap_or(""))
        .collect()
}

fn classify(s: &[Token], facts: &mut ScriptFacts) {
    let head = words(s, 4);
    let starts = |prefix: &[&str]| head.len() >= prefix.len() && head[..prefix.len()] == *prefix;
    let has_word = |w: &str| s.iter().any(|t| word(Some(t)) == Some(w));

    // Statements that cannot run in a transaction block, and transaction control.
    let non_tx = (starts(&["create"]) && has_word("index") && has_word("concurrently"))
        || (starts(&["drop", "index"]) && has_word("concurrently"))
        || (starts(&["reindex"]) && has_word("concurrently"))
        || starts(&["vacuum"])
        || starts(&["create", "database"])
        || starts(&["drop", "database"])
        || starts(&["alter", "system"])
        || starts(&["create", "tablespace"])
        || starts(&["drop", "tablespace"])
        || starts(&["create", "subscription"])
        || starts(&["drop", "subscription"])
        || ["begin", "start", "commit", "end", "rollback", "abort"]
            .iter()
            .any(|w| starts(&[w]));
    if non_tx {
        facts.non_transactional.push(
            head.iter()
                .filter(|w| !w.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    for (prefix, what) in [
        (&["drop", "schema"][..], "drops a schema"),
        (&["drop", "owned"][..], "drops everything a role owns"),
        (&["drop", "database"][..], "drops a database"),
    ] {
        if starts(prefix) {
            facts.refused.push(format!(
                "it {what}, and stablehand cannot tell which rows that destroys"
            ));
        }
    }

    if starts(&["drop", "table"]) {
        let mut i = 2;
        if word(s.get(i)) == Some("if") && word(s.get(i + 1)) == Some("exists") {
            i += 2;
        }
        while let Some((name, next)) = name_at(s, i) {
            facts.destroys.push(Destroys::Rows { table: name });
            if s.get(next) == Some(&Token::Punct(',')) {
                i = next + 1;
            } else {
                break;
            }
        }
    } else if starts(&["truncate"]) {
        let mut i = 1;
        if word(s.get(i)) == Some("table") {
            i += 1;
        }
        if word(s.get(i)) == Some("only") {
            i += 1;
        }
        while let Some((name, next)) = name_at(s, i) {
            facts.destroys.push(Destroys::Rows { table: name });
            if s.get(next) == Some(&Token::Punct(',')) {
                i = next + 1;
                if word(s.get(i)) == Some("only") {
                    i += 1;
                }
            } else {
                break;
            }
        }
    } else if starts(&["delete", "from"]) {
        let i = if word(s.get(2)) == Some("only") { 3 } else { 2 };
        if let Some((name, _)) = name_at(s, i) {
            facts.destroys.push(Destroys::Rows { table: name });
        }
    } else if starts(&["alter", "table"]) {
        let mut i = 2;
        if word(s.get(i)) == Some("if") && word(s.get(i + 1)) == Some("exists") {
            i += 2;
        }
        if word(s.get(i)) == Some("only") {
            i += 1;
        }
        let Some((table, next)) = name_at(s, i) else {
            return;
        };
        // The actions, split at top-level commas.
        let mut depth = 0i32;
        let mut action_start = next;
        for j in next..=s.len() {
            match s.get(j) {
                Some(Token::Punct('(')) => depth += 1,
                Some(Token::Punct(')')) => depth -= 1,
                Some(Token::Punct(',')) if depth == 0 => {}
                None => {}
                _ => continue,
            }
            if j == s.len() || (s.get(j) == Some(&Token::Punct(',')) && depth == 0) {
                if let Some(column) = dropped_column(&s[action_start..j]) {
                    facts.destroys.push(Destroys::Column {
                        table: table.clone(),
                        column,
                    });
                }
                action_start = j + 1;
            }
        }
    }
}

/// `DROP [COLUMN] [IF EXISTS] name [CASCADE|RESTRICT]` -> name.
fn dropped_column(action: &[Token]) -> Option<Name> {
    if word(action.first()) != Some("drop") {
        return None;
    }
    let mut i = 1;
    match word(action.get(i)) {
        Some("column") => i += 1,
        // DROP CONSTRAINT, and the words that follow DROP in ALTER TABLE's other forms.
        Some(
            "constraint" | "default" | "not" | "expression" | "identity" | "row" | "trigger"
            | "rule",
        ) => return None,
        _ => {}
    }
    if word(action.get(i)) == Some("if") && word(action.get(i + 1)) == Some("exists") {
        i += 2;
    }
    let (name, next) = name_at(action, i)?;
    // A column name is not qualified.
    (next == action.len() || matches!(word(action.get(next)), Some("cascade" | "restrict")))
        .then_some(name)
}

/// A possibly qualified name starting at `i`, and the index after it.
fn name_at(s: &[Token], mut i: usize) -> Option<(Name, usize)> {
    let mut display = Vec::new();
    let mut sql = Vec::new();
    loop {
        match s.get(i)? {
            Token::Word(w) if !matches!(w.as_str(), "cascade" | "restrict") => {
                display.push(w.clone());
                sql.push(quote(w));
            }
            Token::Ident(w) => {
                display.push(w.clone());
                sql.push(quote(w));
            }
            _ => return None,
        }
        i += 1;
        if s.get(i) == Some(&Token::Punct('.')) {
            i += 1;
        } else {
            break;
        }
    }
    Some((
        Name {
            display: display.join("."),
            sql: sql.join("."),
        },
        i,
    ))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tokens of a script, and its psql meta-commands.
fn lex(sql: &str) -> (Vec<Token>, Vec<String>) {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut metas = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let at_line_start = line_start;
        line_start = false;
        if c == '\\' && at_line_start {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            let line: String = chars[i..end].iter().collect();
            metas.push(line.split_whitespace().next().unwrap_or("\\").to_string());
            tokens.push(Token::Meta(line));
            i = end;
        } else if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '\'' {
            i = skip_string(&chars, i + 1, false);
            tokens.push(Token::Str);
        } else if (c == 'e' || c == 'E') && next == Some('\'') {
            i = skip_string(&chars, i + 2, true);
            tokens.push(Token::Str);
        } else if c == '"' {
            let mut ident = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' {
                    if chars.get(i + 1) == Some(&'"') {
                        ident.push('"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                ident.push(chars[i]);
                i += 1;
            }
            tokens.push(Token::Ident(ident));
        } else if c == '$' {
            // $tag$ ... $tag$ (a bare $n parameter is a word below).
            let tag_end = chars[i + 1..]
                .iter()
                .position(|&c| !(c.is_alphanumeric() || c == '_'))
                .map(|p| i + 1 + p);
            match tag_end {
                Some(e)
                    if chars[e] == '$' && !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                {
                    let tag: String = chars[i..=e].iter().collect();
                    let body_start = e + 1;
                    let rest: String = chars[body_start..].iter().collect();
                    let close = rest.find(&tag).map_or(chars.len(), |p| {
                        body_start + rest[..p].chars().count() + tag.chars().count()
                    });
                    tokens.push(Token::Str);
                    i = close;
                }
                _ => {
                    tokens.push(Token::Punct('$'));
                    i += 1;
                }
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let w: String = chars[start..i].iter().collect();
            tokens.push(Token::Word(w.to_lowercase()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    // Meta-commands end the statement they interrupt; keep them out of statements.
    let tokens = tokens
        .into_iter()
        .map(|t| match t {
            Token::Meta(_) => Token::Punct(';'),
            t => t,
        })
        .collect();
    (tokens, metas)
}

/// The index after a string constant whose opening quote is before `i`.
fn skip_string(chars: &[char], mut i: usize, backslash_escapes: bool) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if backslash_escapes => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destroyed(sql: &str) -> Vec<String> {
        analyse(sql)
            .destroys
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn prisma_down_scripts() {
        // What `prisma migrate diff --script` writes for a down migration.
        let sql = r#"-- DropForeignKey
ALTER TABLE "Post" DROP CONSTRAINT "Post_authorId_fkey";

-- AlterTable
ALTER TABLE "User" DROP COLUMN "bio",
ADD COLUMN     "legacy" TEXT;

-- DropTable
DROP TABLE "Post";

-- DropEnum
DROP TYPE "Role";
"#;
        let f = analyse(sql);
        assert_eq!(f.statements, 4);
        assert_eq!(destroyed(sql), ["column User.bio", "table Post"]);
        assert!(f.non_transactional.is_empty() && f.refused.is_empty());
        match &f.destroys[0] {
            Destroys::Column { table, column } => {
                assert_eq!(table.sql, "\"User\"");
                assert_eq!(column.sql, "\"bio\"");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forms_of_drop_and_delete() {
        assert_eq!(
            destroyed("drop table if exists a, public.\"B\" cascade"),
            ["table a", "table public.B"]
        );
        assert_eq!(destroyed("ALTER TABLE ONLY s.t DROP c"), ["column s.t.c"]);
        assert_eq!(
            destroyed("alter table t drop column if exists c cascade, drop constraint k, alter column d drop default, drop e"),
            ["column t.c", "column t.e"]
        );
        assert_eq!(
            destroyed("truncate table only a, b; delete from only c where x = 1"),
            ["table a", "table b", "table c"]
        );
        assert_eq!(
            destroyed("drop index i; drop type r; drop view v"),
            Vec::<String>::new()
        );
        // Unquoted names fold to lower case; quoted ones keep theirs.
        assert_eq!(destroyed("DROP TABLE Users"), ["table users"]);
    }

    #[test]
    fn quoting_hides_keywords_and_semicolons() {
        let sql = "comment on table t is 'drop table x; it''s fine';\n\
                   create function f() returns int as $body$ begin drop table y; return 1; end $body$ language plpgsql;\n\
                   /* drop table z; /* nested */ still comment */ select E'\\'; drop table w';\n\
                   -- drop table v;\n";
        let f = analyse(sql);
        assert_eq!(f.statements, 3, "{f:?}");
        assert!(f.destroys.is_empty(), "{f:?}");
        assert!(f.non_transactional.is_empty(), "{f:?}");
    }

    #[test]
    fn non_transactional_statements_and_refusals() {
        let f = analyse(
            "create unique index concurrently i on t (c); drop index concurrently j; vacuum; begin; commit",
        );
        assert_eq!(
            f.non_transactional,
            [
                "create unique index concurrently",
                "drop index concurrently j",
                "vacuum",
                "begin",
                "commit"
            ]
        );
        let f = analyse("drop schema app cascade;\n\\connect other\ndrop table t;");
        assert_eq!(f.refused.len(), 2, "{f:?}");
        assert!(f.refused[0].contains("\\connect"), "{f:?}");
        assert!(f.refused[1].contains("drops a schema"), "{f:?}");
        assert_eq!(
            destroyed("drop table t;\n\\echo hi\ndrop table u"),
            ["table t", "table u"]
        );
    }
}
