//! The proxy's two servers: the data path on `proxy.listen` (hyper, HTTP/1.1 with
//! keep-alive, upgrades such as WebSockets, bodies streamed both ways, X-Forwarded-*),
//! and the control API on the Unix socket.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Context as TaskContext;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{HeaderValue, CONNECTION, HOST, RETRY_AFTER, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{save_route, Change, Counts, Route, State};
use crate::config::Loaded;

/// A response body: the upstream's, streamed as it comes, or one of the proxy's own.
/// An enum rather than a box: no allocation per response on the data path.
type Body = Either<Incoming, Full<Bytes>>;

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
    /// `upstream` as a Host header for a request that has none (HTTP/1.0), made once
    /// per switch, not per request.
    host: HeaderValue,
    counters: Arc<Counters>,
}

fn host_of(upstream: SocketAddr) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&upstream.to_string())
        .with_context(|| format!("{upstream} as a Host header"))
}

struct Shared {
    listen: String,
    state_dir: PathBuf,
    active: RwLock<Arc<Active>>,
    /// Bumped by every change of `active`: a connection re-reads the route only when it
    /// moved, so requests do not all write to the lock's shared cache line.
    version: AtomicU64,
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
        let host = host_of(upstream)?;
        save_route(&self.state_dir, &route)?;
        let counters = self.counters_of(&route.upstream);
        *self.active.write().expect("not poisoned") = Arc::new(Active {
            route,
            upstream,
            host,
            counters,
        });
        self.version.fetch_add(1, Ordering::Release);
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
            host: host_of(upstream)?,
            counters,
        })),
        version: AtomicU64::new(0),
        all: Mutex::new(all),
        retry_after: config.retry_after.as_secs().max(1).to_string(),
        page,
    });
    // Event loops of their own, as nginx runs workers; half the cores by default, as the
    // app and its database need the rest (on 2 cores, 2 loops beside the load lost
    // throughput and tail latency to 1: docs/benchmarks.md). One acceptor hands each
    // new connection to the worker serving the fewest (a worker that accepted for itself
    // could take a whole burst of connections). No work stealing, nothing but counters
    // shared across threads.
    let workers = (0..config.worker_count())
        .map(|n| start_worker(n, shared.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let count = workers.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let control = bind_control(&state_dir)?;
        tracing::info!(
            "stablehand proxy: {} -> {} ({}); control {}; {count} worker(s)",
            config.listen,
            route.upstream,
            route.colour,
            super::socket_path(&state_dir).display()
        );
        tokio::spawn(accept(listener, workers));
        let ctl = tokio::spawn(serve_control(control, shared.clone()));
        shutdown_signal().await;
        ctl.abort();
        let _ = std::fs::remove_file(super::socket_path(&state_dir));
        Ok(())
    })
}

/// How long connecting to the upstream may take before the request is a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type UpstreamConnection = Connection<TokioIo<tokio::net::TcpStream>, Incoming>;

/// A client connection's own kept-alive connection to the upstream, driven by the same
/// task as the client connection: no pool to look up and lock, no hop to another task
/// per request. HTTP/1.1 serves one request of a connection at a time, so one upstream
/// connection per client connection is never a queue. After a switch, the next request
/// opens a connection to the new upstream; the old one closes once idle.
struct Link {
    sender: Mutex<Option<(SocketAddr, SendRequest<Incoming>)>>,
    connections: Mutex<Vec<Pin<Box<UpstreamConnection>>>>,
    /// The route as this connection last read it, with `Shared::version` then.
    route: Mutex<(u64, Arc<Active>)>,
    /// The client's address as an X-Forwarded-For value, made once per connection.
    peer: HeaderValue,
}

impl Link {
    fn new(shared: &Shared, peer: SocketAddr) -> Link {
        Link {
            sender: Mutex::default(),
            connections: Mutex::default(),
            route: Mutex::new((shared.version.load(Ordering::Acquire), shared.active())),
            peer: HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a header value"),
        }
    }

    /// The route now: the connection's copy unless a change came since it was read.
    fn active(&self, shared: &Shared) -> Arc<Active> {
        let now = shared.version.load(Ordering::Acquire);
        let mut route = self.route.lock().expect("not poisoned");
        if route.0 != now {
            *route = (now, shared.active());
        }
        route.1.clone()
    }

    /// Sends `req` to `upstream`, on the kept connection when it is to `upstream` and
    /// open. A request that an idle connection closed under it never left: it is sent
    /// once more on a new connection.
    async fn send(
        &self,
        upstream: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        for attempt in 0..2 {
            let kept = self.sender.lock().expect("not poisoned").take();
            let mut sender = match kept {
                Some((to, sender)) if to == upstream && !sender.is_closed() => sender,
                _ => self.connect(upstream).await?,
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    *self.sender.lock().expect("not poisoned") = Some((upstream, sender));
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => req = unsent,
                    _ => return Err(e.into_error().to_string()),
                },
            }
        }
        unreachable!("the second attempt returns")
    }

    async fn connect(&self, upstream: SocketAddr) -> Result<SendRequest<Incoming>, String> {
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(upstream))
                .await
                .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        self.connections
            .lock()
            .expect("not poisoned")
            .push(Box::pin(connection));
        Ok(sender)
    }

    /// Drives the upstream connections; the closed ones are let go.
    fn poll_connections(&self, cx: &mut TaskContext<'_>) {
        self.connections
            .lock()
            .expect("not poisoned")
            .retain_mut(|c| c.as_mut().poll(cx).is_pending());
    }
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

/// A worker: its own event loop on its own thread, serving the connections handed to it.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Connections it serves now.
    open: Arc<AtomicU64>,
}

fn start_worker(n: usize, shared: Arc<Shared>) -> anyhow::Result<Worker> {
    let (connections, mut handed) = tokio::sync::mpsc::unbounded_channel();
    let open = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let served = open.clone();
    std::thread::Builder::new()
        .name(format!("proxy-{n}"))
        .spawn(move || {
            runtime.block_on(async move {
                while let Some((stream, peer)) = handed.recv().await {
                    let (shared, served) = (shared.clone(), served.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                            serve_client(stream, peer, shared).await;
                        }
                        served.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            })
        })?;
    Ok(Worker { connections, open })
}

/// Takes each new connection and hands it to the worker serving the fewest (ties in
/// turn).
async fn accept(listener: tokio::net::TcpListener, workers: Vec<Worker>) {
    let mut next = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: not a reason to spin on the listener.
                tracing::warn!("stablehand proxy: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let n = workers.len();
        let pick = (0..n)
            .map(|i| (next + i) % n)
            .min_by_key(|&i| workers[i].open.load(Ordering::Relaxed))
            .expect("at least one worker");
        next = (pick + 1) % n;
        workers[pick].open.fetch_add(1, Ordering::Relaxed);
        if workers[pick].connections.send((stream, peer)).is_err() {
            workers[pick].open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One client connection, with its own upstream connection, in one task.
async fn serve_client(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let link = Arc::new(Link::new(&shared, peer));
    let service = {
        let link = link.clone();
        hyper::service::service_fn(move |req| {
            let (shared, link) = (shared.clone(), link.clone());
            async move { Ok::<_, Infallible>(forward(req, &shared, &link).await) }
        })
    };
    let mut client = std::pin::pin!(hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades());
    // The client connection and its upstream connections, in one task. The upstream is
    // polled after the client side too: a request may just have opened a connection
    // that nothing has polled yet.
    let _ = std::future::poll_fn(|cx| {
        link.poll_connections(cx);
        let done = client.as_mut().poll(cx);
        link.poll_connections(cx);
        done
    })
    .await;
}

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(text.into())));
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
async fn forward(mut req: Request<Incoming>, shared: &Shared, link: &Link) -> Response<Body> {
    let active = link.active(shared);
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

    add_forwarded(&mut req, &link.peer);
    if !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, active.host.clone());
    }
    // A connection of our own: the request target goes in origin form.
    if req.uri().authority().is_some() {
        let target = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = target.into();
    }

    let upgrade = req.headers().contains_key(UPGRADE);
    let answer = match upgrade {
        true => forward_upgrade(req, active.upstream).await,
        false => link
            .send(active.upstream, req)
            .await
            .map(|r| r.map(Either::Left)),
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
fn add_forwarded(req: &mut Request<Incoming>, peer: &HeaderValue) {
    use hyper::header::HeaderName;
    const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    let headers = req.headers_mut();
    let xff = match headers.get(&FOR) {
        Some(before) => {
            let mut v = Vec::with_capacity(before.len() + 2 + peer.len());
            v.extend_from_slice(before.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => Some(peer.clone()),
    };
    if let Some(v) = xff {
        headers.insert(FOR, v);
    }
    if !headers.contains_key(&PROTO) {
        headers.insert(PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(HOST).cloned() {
        headers.entry(FORWARDED_HOST).or_insert(host);
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
    Ok(response.map(Either::Left))
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
