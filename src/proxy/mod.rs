//! The traffic switch: `stablehand proxy run` listens on the app's public address
//! (`proxy.listen`) and forwards every request to the release that serves now (its
//! upstream). A deploy talks to it over a control socket (`.stablehand/proxy.sock`,
//! 0600): switch to another upstream (new requests go there at once; requests in flight
//! on the old one finish), answer 503 with `Retry-After` while a release that cannot
//! run beside the old code is put in place (maintenance), and read what each upstream
//! answered (requests, 5xx, connection errors, in flight). The proxy is its own process:
//! it keeps serving when the deploy that switched it exits, and it starts again on the
//! upstream it last switched to (`.stablehand/proxy.json`, written atomically).

mod server;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use server::run;

/// What the proxy does with traffic, as persisted and as the control socket reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Where requests go (host:port).
    pub upstream: String,
    /// Which release serves there: "base" (the app as Compose runs it), "blue", "green".
    pub colour: String,
    /// Answer 503 with Retry-After instead of forwarding.
    pub maintenance: bool,
    /// When traffic last moved.
    pub switched_at: Option<jiff::Timestamp>,
}

/// What one upstream answered since the proxy started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// Responses with a 5xx status from the upstream.
    pub server_errors: u64,
    /// Requests the upstream could not be reached for (answered 502).
    pub connection_errors: u64,
    pub in_flight: u64,
    /// Maintenance answers (503 from the proxy itself; counted under the route's
    /// upstream).
    pub maintenance: u64,
}

/// The proxy's state, as `GET /state` on the control socket returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub listen: String,
    pub pid: u32,
    pub route: Route,
    /// By upstream address.
    pub upstreams: BTreeMap<String, Counts>,
}

/// The control socket of the proxy serving this app.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("proxy.sock")
}

/// The route the proxy last switched to.
pub fn route_path(state_dir: &Path) -> PathBuf {
    state_dir.join("proxy.json")
}

/// The persisted route, if the proxy ever switched.
pub fn saved_route(state_dir: &Path) -> anyhow::Result<Option<Route>> {
    let path = route_path(state_dir);
    let Some(bytes) = crate::files::read_if_exists(&path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!(
            "{} is unreadable; remove it to start from proxy.upstream",
            path.display()
        )
    })
}

fn save_route(state_dir: &Path, route: &Route) -> anyhow::Result<()> {
    fs_err::create_dir_all(state_dir)?;
    crate::files::write_file_atomic(&route_path(state_dir), &serde_json::to_vec_pretty(route)?)
}

/// A change asked of the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Change {
    /// Send new requests to `upstream` (maintenance ends).
    Upstream { upstream: String, colour: String },
    /// Start or end the maintenance answer.
    Maintenance { on: bool },
}

/// Talks to the running proxy over its control socket.
pub struct Control {
    socket: PathBuf,
}

impl Control {
    pub fn new(state_dir: &Path) -> Control {
        Control {
            socket: socket_path(state_dir),
        }
    }

    /// The proxy's state; an error when no proxy answers on the socket.
    pub fn state(&self) -> anyhow::Result<State> {
        let body = self.call("GET", "/state", None)?;
        serde_json::from_str(&body).context("reading the proxy's state")
    }

    /// Applies `change` and returns the state after it.
    pub fn change(&self, change: &Change) -> anyhow::Result<State> {
        let body = self.call("POST", "/route", Some(&serde_json::to_string(change)?))?;
        serde_json::from_str(&body).context("reading the proxy's state")
    }

    /// One HTTP/1.1 exchange on the socket; the body of a 200 answer.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "no stablehand proxy answers on {} (start it: `stablehand proxy run`)",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: stablehand-proxy\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, text) = answer
            .split_once("\r\n\r\n")
            .context("the proxy's answer has no body")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        let text = decode_chunked(head, text);
        if status != "200" {
            anyhow::bail!(
                "the proxy refused {method} {path}: {status} {}",
                text.trim()
            );
        }
        Ok(text)
    }
}

/// The body of an HTTP/1.1 answer, de-chunked when it was sent chunked.
fn decode_chunked(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_answer_is_read_whole() {
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked";
        assert_eq!(
            decode_chunked(head, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(decode_chunked("HTTP/1.1 200 OK", "plain"), "plain");
    }

    #[test]
    fn a_change_is_written_as_the_control_socket_reads_it() {
        let c = Change::Upstream {
            upstream: "127.0.0.1:18081".into(),
            colour: "blue".into(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"to":"upstream","upstream":"127.0.0.1:18081","colour":"blue"}"#
        );
        let m: Change = serde_json::from_str(r#"{"to":"maintenance","on":true}"#).unwrap();
        assert!(matches!(m, Change::Maintenance { on: true }));
    }
}
