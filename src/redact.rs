//! Redaction as a type: URLs that may carry credentials print without them.

use std::fmt;

/// A URL whose password is never displayed. `Display` shows `user:****@host`.
#[derive(Clone, PartialEq, Eq)]
pub struct SafeUrl(url::Url);

impl SafeUrl {
    pub fn parse(raw: &str) -> Result<Self, url::ParseError> {
        url::Url::parse(raw).map(SafeUrl)
    }

    pub fn inner(&self) -> &url::Url {
        &self.0
    }

    /// The password, to be handed to a child only through the environment.
    pub fn password(&self) -> Option<String> {
        self.0.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
    }

    /// The same URL with the password removed (safe for argv).
    pub fn without_password(&self) -> SafeUrl {
        let mut u = self.0.clone();
        let _ = u.set_password(None);
        SafeUrl(u)
    }

    /// The full text of the URL without its password.
    pub fn as_argument(&self) -> String {
        self.without_password().0.to_string()
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.password().is_some() {
            let mut u = self.0.clone();
            let _ = u.set_password(Some("****"));
            write!(f, "{u}")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeUrl({self})")
    }
}

/// Replaces the password of every `scheme://user:password@`, and the value of every
/// `password=` parameter, in free text with `****`.
pub fn redact_text(text: &str) -> String {
    redact_password_params(&redact_userinfo(text))
}

fn redact_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.to_ascii_lowercase().find("password=") {
        let (head, tail) = rest.split_at(pos + "password=".len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("****");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":****");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_hides_password() {
        let u = SafeUrl::parse("postgresql://app:s3cr%40t@db:5432/app?sslmode=require").unwrap();
        assert_eq!(
            u.to_string(),
            "postgresql://app:****@db:5432/app?sslmode=require"
        );
        assert_eq!(u.password().as_deref(), Some("s3cr@t"));
        assert_eq!(
            u.as_argument(),
            "postgresql://app@db:5432/app?sslmode=require"
        );
    }

    #[test]
    fn free_text_is_redacted() {
        assert_eq!(
            redact_text("connect to postgres://u:pw@h/db failed; see https://x.y/z"),
            "connect to postgres://u:****@h/db failed; see https://x.y/z"
        );
        assert_eq!(redact_text("no urls here"), "no urls here");
        assert_eq!(redact_text("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(
            redact_text("postgresql://h/db?sslmode=require&password=hunter2 next"),
            "postgresql://h/db?sslmode=require&password=**** next"
        );
    }
}
