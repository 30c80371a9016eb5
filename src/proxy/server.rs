//! The proxy's two servers: the data path on `proxy.listen` (hyper, HTTP/1.1 with
//! keep-alive, upgrades such as WebSockets, bodies streamed both ways, X-Forwarded-*),
//! and the control API on the Unix socket.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, HOST, RETRY_AFTER, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{save_route, Change, Counts, Route, State};
use crate::config::Loaded;

type Body = BoxBody<Bytes, hyper::Error>;

/// Counters of one upstream, shared by the requests in flight to it.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    server_errors: AtomicU64,
    connection_errors: AtomicU64,
    in_flight: AtomicU64,
    maintenance: AtomicU64,
}

impl Counters {
    fn counts(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            maintenance: self.maintenance.load(Ordering::Relaxed),
        }
    }
}

/// The route now, with its upstream's counters: one read lock per request.
struct Active {
    route: Route,
    upstream: SocketAddr,
    /// `upstream` as a URI authority, made once per switch, not per request.
    authority: hyper::http::uri::Authority,
    counters: Arc<Counters>,
}

fn authority_of(upstream: SocketAddr) -> anyhow::Result<hyper::http::uri::Authority> {
    upstream
        .to_string()
        .parse()
        .with_context(|| format!("{upstream} as a URI authority"))
}

struct Shared {
    listen: String,
    state_dir: PathBuf,
    active: RwLock<Arc<Active>>,
    /// Every upstream traffic went to, by address.
    all: Mutex<BTreeMap<String, Arc<Counters>>>,
    retry_after: String,
    page: Option<Bytes>,
}

impl Shared {
    fn active(&self) -> Arc<Active> {
        self.active.read().expect("not poisoned").clone()
    }

    fn counters_of(&self, upstream: &str) -> Arc<Counters> {
        self.all
            .lock()
            .expect("not poisoned")
            .entry(upstream.to_string())
            .or_default()
            .clone()
    }

    fn state(&self) -> State {
        let route = self.active().route.clone();
        let upstreams = self
            .all
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.counts()))
            .collect();
        State {
            listen: self.listen.clone(),
            pid: std::process::id(),
            route,
            upstreams,
        }
    }

    /// Applies a change: persisted first, so a restarted proxy takes the same route.
    fn apply(&self, change: Change) -> anyhow::Result<State> {
        let now = self.active();
        let route = match change {
            Change::Upstream { upstream, colour } => Route {
                upstream,
                colour,
                maintenance: false,
                switched_at: Some(jiff::Timestamp::now()),
            },
            Change::Maintenance { on } => Route {
                maintenance: on,
                ..now.route.clone()
            },
        };
        let upstream: SocketAddr = route.upstream.parse().with_context(|| {
            format!("{:?} is not an address like 127.0.0.1:3000", route.upstream)
        })?;
        let authority = authority_of(upstream)?;
        save_route(&self.state_dir, &route)?;
        let counters = self.counters_of(&route.upstream);
        *self.active.write().expect("not poisoned") = Arc::new(Active {
            route,
            upstream,
            authority,
            counters,
        });
        Ok(self.state())
    }
}

/// Runs the proxy until SIGTERM or SIGINT: the data path on `proxy.listen`, the control
/// API on `.stablehand/proxy.sock`.
pub fn run(loaded: &Loaded) -> anyhow::Result<()> {
    let config = loaded
        .config
        .proxy
        .clone()
        .context("stablehand.toml has no [proxy] section: set proxy.listen (the app's public address) and proxy.upstream (where the app serves now)")?;
    let state_dir = loaded.state_dir();
    let route = match super::saved_route(&state_dir)? {
        Some(route) => route,
        None => Route {
            upstream: config.upstream.clone(),
            colour: "base".into(),
            maintenance: false,
            switched_at: None,
        },
    };
    let page = match &config.maintenance_page {
        Some(p) => {
            let path = loaded.app_dir.join(p);
            Some(Bytes::from(fs_err::read(&path).with_context(|| {
                format!("proxy.maintenance_page {} cannot be read", path.display())
            })?))
        }
        None => None,
    };
    let listen: SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("proxy.listen {:?} is not an address", config.listen))?;
    let upstream: SocketAddr = route
        .upstream
        .parse()
        .with_context(|| format!("the saved upstream {:?} is not an address", route.upstream))?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("listening on proxy.listen {listen}"))?;
    listener.set_nonblocking(true)?;
    let counters = Arc::new(Counters::default());
    let all = BTreeMap::from([(route.upstream.clone(), counters.clone())]);
    let shared = Arc::new(Shared {
        listen: config.listen.clone(),
        state_dir: state_dir.clone(),
        active: RwLock::new(Arc::new(Active {
            route: route.clone(),
            upstream,
            authority: authority_of(upstream)?,
            counters,
        })),
        all: Mutex::new(all),
        retry_after: config.retry_after.as_secs().max(1).to_string(),
        page,
    });
    // One event loop per core, as nginx runs a worker per core: each accepts from the
    // one listening socket (whichever is free takes the next connection) and has its own
    // pool of upstream connections; no work stealing, no pool shared across threads.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in 0..workers {
        let shared = shared.clone();
        let listener = listener.try_clone()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("proxy-{n}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            serve_data(listener, shared).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("a proxy worker stopped before it listened")??;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let control = bind_control(&state_dir)?;
        tracing::info!(
            "stablehand proxy: {} -> {} ({}); control {}; {workers} worker(s)",
            config.listen,
            route.upstream,
            route.colour,
            super::socket_path(&state_dir).display()
        );
        let ctl = tokio::spawn(serve_control(control, shared.clone()));
        shutdown_signal().await;
        ctl.abort();
        let _ = std::fs::remove_file(super::socket_path(&state_dir));
        Ok(())
    })
}

/// The pool of upstream connections of one worker.
fn upstream_client() -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The control socket, 0600 (whoever may deploy may switch traffic; nobody else).
fn bind_control(state_dir: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::create_dir_all(state_dir)?;
    let path = super::socket_path(state_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "another stablehand proxy already answers on {}; stop it first",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_data(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let client = upstream_client();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, client) = (shared.clone(), client.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (shared, client) = (shared.clone(), client.clone());
                async move { Ok::<_, Infallible>(forward(req, peer, &shared, &client).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// Decrements the in-flight count of an upstream when the request ends.
struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request: the maintenance answer, or forwarded to the upstream of the route now.
async fn forward(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    client: &Client<HttpConnector, Incoming>,
) -> Response<Body> {
    let active = shared.active();
    let counters = active.counters.clone();
    if active.route.maintenance {
        counters.maintenance.fetch_add(1, Ordering::Relaxed);
        let mut r = match &shared.page {
            Some(page) => {
                let mut r = full(StatusCode::SERVICE_UNAVAILABLE, page.clone());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            None => full(
                StatusCode::SERVICE_UNAVAILABLE,
                "down for maintenance: a new release is being put in place\n",
            ),
        };
        if let Ok(v) = HeaderValue::from_str(&shared.retry_after) {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
        return r;
    }
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(counters.clone());

    add_forwarded(&mut req, peer);
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
    parts.authority = Some(active.authority.clone());
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    let Ok(uri) = hyper::Uri::from_parts(parts) else {
        return full(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    *req.uri_mut() = uri;

    let upgrade = req.headers().contains_key(UPGRADE);
    let answer = match upgrade {
        true => forward_upgrade(req, active.upstream).await,
        false => client
            .request(req)
            .await
            .map(|r| r.map(|b| b.boxed()))
            .map_err(|e| e.to_string()),
    };
    match answer {
        Ok(response) => {
            if response.status().is_server_error() {
                counters.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            response
        }
        Err(e) => {
            counters.connection_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("stablehand proxy: upstream {}: {e}", active.upstream);
            full(
                StatusCode::BAD_GATEWAY,
                format!("the app at {} did not answer\n", active.upstream),
            )
        }
    }
}

/// X-Forwarded-For (appended), -Proto and -Host, as a reverse proxy sets them; Host
/// stays what the client sent.
fn add_forwarded(req: &mut Request<Incoming>, peer: SocketAddr) {
    let headers = req.headers_mut();
    let ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(HOST).cloned() {
        headers.entry("x-forwarded-host").or_insert(host);
    }
}

/// An upgrade (WebSocket): its own upstream connection; after `101`, bytes are copied
/// both ways until either side closes.
async fn forward_upgrade(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
) -> Result<Response<Body>, String> {
    let client_side = hyper::upgrade::on(&mut req);
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // A connection of its own: the request target goes in origin form.
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = target.parse() {
        *req.uri_mut() = uri;
    }
    if !req.headers().contains_key(CONNECTION) {
        req.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_side.await, upstream_side.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    Ok(response.map(|b| b.boxed()))
}

async fn serve_control(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(control(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `GET /state`; `POST /route` with a `Change`.
async fn control(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let json = |state: &State| {
        let mut r = full(
            StatusCode::OK,
            serde_json::to_vec(state).expect("the state serialises"),
        );
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/state") => json(&shared.state()),
        ("POST", "/route") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return full(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let change: Change = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => return full(StatusCode::BAD_REQUEST, format!("not a change: {e}\n")),
            };
            match shared.apply(change) {
                Ok(state) => json(&state),
                Err(e) => full(StatusCode::BAD_REQUEST, format!("{e:#}\n")),
            }
        }
        _ => full(StatusCode::NOT_FOUND, "GET /state or POST /route\n"),
    }
}
