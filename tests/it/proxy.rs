//! `stablehand proxy`, the traffic switch, as a real process on loopback: requests
//! forwarded with X-Forwarded-*, a switch that moves the next request of a kept-alive
//! connection, a switch under load that fails no request, the maintenance 503, an
//! upgraded connection tunnelled both ways, a streamed body, an unreachable upstream,
//! and the route kept across a restart. The upstreams are small HTTP servers in this
//! file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{free_port, wait_for};

/// What a test upstream does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 with its name, then the request head it got.
    Echo,
    /// 200, chunked: "first\n", a pause of 1 s, "second\n".
    Slow,
    /// 101 to an Upgrade, then every byte echoed back.
    Upgrade,
    /// As Echo, then the connection is closed without a word (an app whose keep-alive
    /// timeout fires right after it answered).
    EchoThenClose,
}

/// An HTTP/1.1 server on 127.0.0.1 (keep-alive, thread per connection).
struct Upstream {
    port: u16,
}

impl Upstream {
    fn start(name: &'static str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream, name, behaviour));
            }
        });
        Upstream { port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

fn serve(stream: TcpStream, name: &str, behaviour: Behaviour) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(head) = read_head(&mut reader) {
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match behaviour {
            Behaviour::Echo | Behaviour::EchoThenClose => {
                let text = format!("{name}\n{head}");
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                if matches!(behaviour, Behaviour::EchoThenClose) {
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Behaviour::Slow => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n"
                );
                let _ = writer.flush();
                std::thread::sleep(Duration::from_secs(1));
                let _ = write!(writer, "7\r\nsecond\n\r\n0\r\n\r\n");
            }
            Behaviour::Upgrade => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
                );
                let mut buf = [0u8; 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if writer.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A proxy process with its own app directory.
struct Proxy {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Proxy {
    fn start(upstream: &str, extra: &str) -> Proxy {
        Proxy::start_with(upstream, extra, &[])
    }

    /// `start`, with files written into the app directory first.
    fn start_with(upstream: &str, extra: &str, files: &[(&str, &str)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let port = free_port();
        std::fs::write(
            dir.path().join("stablehand.toml"),
            format!(
                "[database]\nname = \"app\"\n\n[proxy]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{upstream}\"\n{extra}"
            ),
        )
        .unwrap();
        let mut p = Proxy {
            dir,
            port,
            child: None,
        };
        p.launch();
        p
    }

    fn launch(&mut self) {
        let child = self
            .cmd(&["proxy", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(Duration::from_secs(20), || {
            (self.cli(&["proxy", "status"]).0 == 0).then_some(())
        })
        .expect("the proxy answers on its control socket");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stablehand"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("STABLEHAND_CONFIG");
        c
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn state(&self) -> serde_json::Value {
        let (code, out, err) = self.cli(&["--json", "proxy", "status"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn switch(&self, upstream: &str, colour: &str) {
        let (code, _, err) = self.cli(&["proxy", "switch", upstream, "--colour", colour]);
        assert_eq!(code, 0, "{err}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join(".stablehand")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request on a kept-alive connection: (status, body).
fn exchange(reader: &mut BufReader<TcpStream>, request: &str) -> (u16, String) {
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let head = read_head(reader).expect("an answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn requests_are_forwarded_and_a_switch_moves_the_next_request_of_a_kept_alive_connection() {
    let a = Upstream::start("A", Behaviour::Echo);
    let b = Upstream::start("B", Behaviour::Echo);
    let proxy = Proxy::start(&a.addr(), "");
    let stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let mut conn = BufReader::new(stream);
    let get = "GET /users?id=7 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n";
    let (status, body) = exchange(&mut conn, get);
    assert_eq!(status, 200);
    assert!(body.starts_with("A\nGET /users?id=7 HTTP/1.1"), "{body}");
    let lower = body.to_ascii_lowercase();
    assert!(lower.contains("host: shop.example"), "{body}");
    assert!(
        lower.contains("x-forwarded-for: 10.0.0.9, 127.0.0.1"),
        "{body}"
    );
    assert!(lower.contains("x-forwarded-proto: http"), "{body}");
    assert!(lower.contains("x-forwarded-host: shop.example"), "{body}");

    proxy.switch(&b.addr(), "green");
    let (status, body) = exchange(&mut conn, get);
    assert_eq!(status, 200);
    assert!(
        body.starts_with("B\n"),
        "the same connection's next request: {body}"
    );

    let state = proxy.state();
    assert_eq!(state["route"]["upstream"], b.addr());
    assert_eq!(state["route"]["colour"], "green");
    assert_eq!(state["upstreams"][a.addr()]["requests"], 1);
    assert_eq!(state["upstreams"][b.addr()]["requests"], 1);
    let (_, human, _) = proxy.cli(&["proxy", "status"]);
    assert!(
        human.contains(&format!("-> {} (green)", b.addr())),
        "{human}"
    );
}

#[test]
fn a_switch_under_load_fails_no_request() {
    let a = Upstream::start("A", Behaviour::Echo);
    let b = Upstream::start("B", Behaviour::Echo);
    let proxy = Proxy::start(&a.addr(), "");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, from_b) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, from_b) =
                (stop.clone(), ok.clone(), failed.clone(), from_b.clone());
            let url = proxy.url("/");
            std::thread::spawn(move || {
                // One agent: its connections are kept alive across the switches.
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    match agent.get(&url).call().map(|r| r.into_string()) {
                        Ok(Ok(body)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if body.starts_with("B\n") {
                                from_b.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    proxy.switch(&b.addr(), "green");
    std::thread::sleep(Duration::from_millis(400));
    proxy.switch(&a.addr(), "blue");
    std::thread::sleep(Duration::from_millis(400));
    proxy.switch(&b.addr(), "green");
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let (ok, failed, from_b) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        from_b.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "{ok} answered");
    assert!(
        ok > 100 && from_b > 0 && from_b < ok,
        "{ok} answered, {from_b} by B"
    );
    let state = proxy.state();
    let served: u64 = [a.addr(), b.addr()]
        .iter()
        .map(|u| state["upstreams"][u]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(served, ok, "{state:#}");
    assert_eq!(state["upstreams"][a.addr()]["in_flight"], 0);
}

#[test]
fn maintenance_answers_503_with_retry_after_and_the_page_then_traffic_resumes() {
    let a = Upstream::start("A", Behaviour::Echo);
    let proxy = Proxy::start_with(
        &a.addr(),
        "retry_after = \"7s\"\nmaintenance_page = \"maintenance.html\"\n",
        &[("maintenance.html", "<h1>Back in a minute</h1>\n")],
    );

    let (code, _, err) = proxy.cli(&["proxy", "maintenance", "on"]);
    assert_eq!(code, 0, "{err}");
    let answer = ureq::get(&proxy.url("/checkout")).call();
    let Err(ureq::Error::Status(503, response)) = answer else {
        panic!("expected 503, got {answer:?}");
    };
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(
        response.into_string().unwrap(),
        "<h1>Back in a minute</h1>\n"
    );
    assert_eq!(proxy.state()["upstreams"][a.addr()]["maintenance"], 1);
    assert_eq!(
        proxy.state()["upstreams"][a.addr()]["requests"],
        0,
        "nothing reached the app"
    );

    let (code, _, _) = proxy.cli(&["proxy", "maintenance", "off"]);
    assert_eq!(code, 0);
    let body = ureq::get(&proxy.url("/"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(body.starts_with("A\n"), "{body}");
}

#[test]
fn an_upgraded_connection_is_tunnelled_both_ways_and_a_streamed_body_arrives_as_sent() {
    let ws = Upstream::start("WS", Behaviour::Upgrade);
    let slow = Upstream::start("SLOW", Behaviour::Slow);
    let proxy = Proxy::start(&ws.addr(), "");

    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let head = read_head(&mut reader).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for word in ["ping\n", "a second message\n"] {
        stream.write_all(word.as_bytes()).unwrap();
        let mut back = String::new();
        reader.read_line(&mut back).unwrap();
        assert_eq!(back, word);
    }

    proxy.switch(&slow.addr(), "slow");
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first, "first\n");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "the first chunk came after {:?}: the body was held back",
        started.elapsed()
    );
    // The rest, up to the last chunk (the connection stays open for the next request).
    let mut rest = String::new();
    while !rest.ends_with("0\r\n\r\n") {
        if reader.read_line(&mut rest).unwrap() == 0 {
            break;
        }
    }
    assert!(rest.contains("second\n"), "{rest}");
}

#[test]
fn an_unreachable_upstream_is_a_counted_502_and_the_route_survives_a_restart() {
    let a = Upstream::start("A", Behaviour::Echo);
    let mut proxy = Proxy::start(&a.addr(), "");
    let socket = proxy.state_dir().join("proxy.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Bad input changes nothing.
    let (code, _, err) = proxy.cli(&["proxy", "switch", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not an address like 127.0.0.1:3000"),
        "{err}"
    );
    assert_eq!(proxy.state()["route"]["upstream"], a.addr());

    let closed = format!("127.0.0.1:{}", free_port());
    proxy.switch(&closed, "nowhere");
    let answer = ureq::get(&proxy.url("/")).call();
    assert!(
        matches!(answer, Err(ureq::Error::Status(502, _))),
        "{answer:?}"
    );
    assert_eq!(proxy.state()["upstreams"][&closed]["connection_errors"], 1);

    proxy.switch(&a.addr(), "blue");
    proxy.stop();
    assert!(!socket.exists(), "the socket goes with the proxy");
    let (code, _, err) = proxy.cli(&["proxy", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no stablehand proxy answers"), "{err}");
    proxy.launch();
    let state = proxy.state();
    assert_eq!(state["route"]["upstream"], a.addr());
    assert_eq!(state["route"]["colour"], "blue");
    let body = ureq::get(&proxy.url("/"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(body.starts_with("A\n"));
}

#[test]
fn a_proxy_config_that_cannot_work_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        std::fs::write(dir.path().join("stablehand.toml"), config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_stablehand"))
            .args(["proxy", "run"])
            .current_dir(dir.path())
            .env_remove("STABLEHAND_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("[database]\nname = \"app\"\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("has no [proxy] section"), "{err}");
    let (code, err) = run(
        "[database]\nname = \"app\"\n[proxy]\nlisten = \"8080\"\nupstream = \"127.0.0.1:3000\"\n",
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("proxy.listen") && err.contains("is not an address"),
        "{err}"
    );
    let (code, err) = run("[database]\nname = \"app\"\n[proxy]\nlisten = \"127.0.0.1:3000\"\nupstream = \"127.0.0.1:3000\"\n");
    assert_eq!(code, Some(78));
    assert!(err.contains("proxy.upstream"), "{err}");
    assert!(!Path::new(&dir.path().join(".stablehand/proxy.sock")).exists());
}

#[test]
fn an_upstream_that_closes_its_kept_alive_connections_costs_no_request() {
    // The proxy keeps one upstream connection per client connection; this upstream
    // closes each one right after its answer, so the next request finds the kept
    // connection closed, sometimes only as it is sent: it must go on a new one.
    let up = Upstream::start("A", Behaviour::EchoThenClose);
    let proxy = Proxy::start(&up.addr(), "workers = 3\n");
    let clients: Vec<_> = (0..6)
        .map(|n| {
            let port = proxy.port;
            std::thread::spawn(move || {
                let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
                let mut statuses = Vec::new();
                for i in 0..40 {
                    let request = match i % 2 {
                        0 => format!("GET /{n}/{i} HTTP/1.1\r\nHost: shop.example\r\n\r\n"),
                        _ => format!(
                            "POST /{n}/{i} HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhello"
                        ),
                    };
                    let (status, body) = exchange(&mut conn, &request);
                    assert!(body.contains(&format!(" /{n}/{i} HTTP/1.1")), "{body}");
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let mut failed = 0;
    for c in clients {
        failed += c.join().unwrap().iter().filter(|s| **s != 200).count();
    }
    assert_eq!(failed, 0, "requests not answered 200 of 240");
    let state = proxy.state();
    assert_eq!(state["upstreams"][up.addr()]["requests"], 240);
    assert_eq!(state["upstreams"][up.addr()]["connection_errors"], 0);
}
