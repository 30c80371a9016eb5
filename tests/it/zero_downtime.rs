//! Zero-downtime deploys (issue 18) on the real stack, under a steady load that counts
//! every failed request: a good release goes blue/green, a release whose gate fails
//! never takes traffic, a release that fails during the watch is switched back from,
//! and a release whose migration the old code cannot run beside gets a maintenance
//! window, while a second load on the app's own port shows what a stop/start deploy
//! costs users. The proposal's layout is there too: nginx in compose in front of the
//! app, pointed at the proxy (the one-time change docs/zero-downtime.md describes), and
//! a load through it. `bench/zero-downtime.sh` runs these tests and prints the first
//! one's last line. A second test, on a stack of its own so the two run side by side,
//! kills deploys during and at the end of their watch and lets `recover` finish them.

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use crate::deploy::{steps, Stack};
use crate::support::{free_port, wait_for};

/// One request of the load: when it was sent and answered, and what came back.
#[derive(Debug, Clone)]
struct Sample {
    sent: Timestamp,
    answered: Timestamp,
    status: Option<u16>,
    body: String,
}

/// A steady load of keep-alive GETs on one address, 4 clients, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|_| {
                let (stop, samples) = (stop.clone(), samples.clone());
                let url = format!("http://{addr}/version");
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(3))
                        .build();
                    // Bounded in count as well as in time.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let sent = Timestamp::now();
                        let (status, body) = match agent.get(&url).call() {
                            Ok(r) => (Some(r.status()), r.into_string().unwrap_or_default()),
                            Err(ureq::Error::Status(code, r)) => {
                                (Some(code), r.into_string().unwrap_or_default())
                            }
                            Err(_) => (None, String::new()),
                        };
                        samples.lock().unwrap().push(Sample {
                            sent,
                            answered: Timestamp::now(),
                            status,
                            body: body.trim().to_string(),
                        });
                        if status != Some(200) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
        }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let samples = self.samples.lock().unwrap().clone();
        assert!(
            samples.len() > 50,
            "the load ran: {} requests",
            samples.len()
        );
        samples
    }
}

/// Whether a step of that name ran (`steps` gives "name:status").
fn has(steps: &[String], name: &str) -> bool {
    steps.iter().any(|s| s.split(':').next() == Some(name))
}

fn failed(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.status != Some(200)).collect()
}

/// The first few of `samples`, for a failure message.
fn few(samples: &[&Sample]) -> String {
    format!(
        "{} of them, first: {:?}",
        samples.len(),
        &samples[..samples.len().min(5)]
    )
}

/// `stablehand proxy run` for the stack, ended (by its id) when dropped.
struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `doctor`'s finding about the proxy.
fn proxy_check(s: &Stack) -> serde_json::Value {
    let (_, out, err) = s.stablehand(&["--json", "doctor"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    v["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["check"] == "proxy").cloned())
        .unwrap_or_else(|| panic!("no proxy finding: {v:#}"))
}

/// When step `name` of an outcome started and ended.
fn step_window(v: &serde_json::Value, name: &str) -> Option<(Timestamp, Timestamp)> {
    let step = v["steps"]
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["name"] == name)?;
    let start: Timestamp = step["started_at"].as_str()?.parse().ok()?;
    let took = step["took_ms"].as_i64().unwrap_or(0);
    Some((start, start + jiff::SignedDuration::from_millis(took)))
}

/// The proposal's layout: nginx as a compose service in front of the app, here with host
/// networking and the host's nginx binary (no image to pull), its upstream pointed at
/// the proxy on `proxy` instead of the app; users arrive on `front`.
fn add_nginx_in_front(s: &Stack, front: u16, proxy: u16) {
    let dev = s.dev();
    std::fs::create_dir_all(dev.join("nginx")).unwrap();
    let conf = r#"user nobody nogroup;
worker_processes 1;
pid /tmp/nginx/nginx.pid;
events {}
http {
  access_log off;
  client_body_temp_path /tmp/nginx/body;
  proxy_temp_path /tmp/nginx/proxy;
  fastcgi_temp_path /tmp/nginx/fastcgi;
  uwsgi_temp_path /tmp/nginx/uwsgi;
  scgi_temp_path /tmp/nginx/scgi;
  upstream backend { server 127.0.0.1:@PROXY@; keepalive 16; }
  server {
    listen 127.0.0.1:@FRONT@;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
"#;
    std::fs::write(
        dev.join("nginx/nginx.conf"),
        conf.replace("@PROXY@", &proxy.to_string())
            .replace("@FRONT@", &front.to_string()),
    )
    .unwrap();
    let service = r#"  nginx:
    image: @IMAGE@
    network_mode: host
    volumes: ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/etc/passwd:/etc/passwd:ro", "/etc/group:/etc/group:ro", "./nginx:/conf:ro"]
    command: ["/bin/sh", "-c", "mkdir -p /tmp/nginx && exec /usr/sbin/nginx -e stderr -p /tmp/nginx -c /conf/nginx.conf -g 'daemon off;'"]
"#;
    let compose = dev.join("docker-compose.yml");
    let text = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(
        &compose,
        text + &service.replace("@IMAGE@", crate::support::busybox_image()),
    )
    .unwrap();
}

/// The answer of `addr`'s `/version`, "" when nothing answers.
fn version(addr: &str) -> String {
    ureq::get(&format!("http://{addr}/version"))
        .timeout(Duration::from_secs(2))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Where traffic goes, as `proxy status` reports it.
fn route(s: &Stack) -> serde_json::Value {
    let (code, out, err) = s.stablehand(&["--json", "proxy", "status"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["route"].clone()
}

/// A fast stack whose app is behind `stablehand proxy run` (blue/green on, a 9 s
/// watch), with the proxy answering and v1 deployed (nothing ran before it; it goes
/// blue/green all the same).
struct BehindTheProxy {
    // Declared first, so ended before the stack is taken down.
    _proxy: ProxyProcess,
    s: Stack,
    /// The proxy: the app's public address.
    public: String,
    /// The app's own port: the main project's release.
    direct: String,
    /// Where the next colour of the app listens.
    next: String,
    /// With nginx in compose in front of the proxy: its address (started by the test).
    nginx: Option<String>,
}

impl BehindTheProxy {
    fn deployed(with_nginx: bool) -> Option<BehindTheProxy> {
        let listen = free_port();
        let next = free_port();
        // The app's own port is stack.web_port; the proxy listens in front of it.
        let mut s = Stack::fast(&format!(
            "\n[proxy]\nlisten = \"127.0.0.1:{listen}\"\nupstream = \"127.0.0.1:@WEB@\"\nport = {next}\nport_env = \"WEB_PORT\"\nwatch = \"9s\"\nwatch_errors = 1\ndrain = \"2s\"\nretry_after = \"3s\"\n"
        ))?;
        // The upstream is the stack's web port (known once the stack exists).
        let path = s.dev().join("stablehand.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("@WEB@", &s.web_port.to_string());
        std::fs::write(&path, text).unwrap();
        let nginx = with_nginx.then(|| {
            let front = free_port();
            add_nginx_in_front(&s, front, listen);
            format!("127.0.0.1:{front}")
        });
        s.commit("v1: behind the proxy");
        crate::support::git(&s.app(), &["pull", "-q"]);
        s.env.push(("RUST_LOG".into(), "warn".into()));
        let proxy = ProxyProcess(
            s.stablehand_cmd(&["proxy", "run"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for(Duration::from_secs(20), || {
            (s.stablehand(&["proxy", "status"]).0 == 0).then_some(())
        })
        .expect("the proxy answers on its control socket");
        let b = BehindTheProxy {
            _proxy: proxy,
            public: format!("127.0.0.1:{listen}"),
            direct: format!("127.0.0.1:{}", s.web_port),
            next: format!("127.0.0.1:{next}"),
            nginx,
            s,
        };
        let (code, v) = b.s.deploy(&[]);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(version(&b.public), "v1: behind the proxy");
        Some(b)
    }
}

#[test]
fn releases_go_blue_green_switch_back_or_behind_maintenance_without_failed_requests() {
    let Some(b) = BehindTheProxy::deployed(true) else {
        return;
    };
    let (s, public, direct) = (&b.s, b.public.as_str(), b.direct.as_str());
    // The operator starts nginx once; deploys never touch it.
    assert!(s
        .compose(&["up", "-d", "nginx"])
        .status()
        .unwrap()
        .success());
    let nginx = b.nginx.clone().expect("nginx in front");
    wait_for(Duration::from_secs(20), || {
        (version(&nginx) == "v1: behind the proxy").then_some(())
    })
    .expect("nginx in compose answers through the proxy");

    // 1. A good release: blue/green under load, not one failed request.
    s.commit("v2: a new page");
    let load = Load::start(public);
    let behind_nginx = Load::start(&nginx);
    let (code, v) = s.deploy(&[]);
    let samples = load.finish();
    let through_nginx = behind_nginx.finish();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        failed(&through_nginx).len(),
        0,
        "through nginx: {}",
        few(&failed(&through_nginx))
    );
    assert!(
        through_nginx.iter().any(|x| x.body == "v2: a new page"),
        "the new release took traffic through nginx"
    );
    let names = steps(&v);
    for step in ["start_next", "gate", "switch", "watch", "promote"] {
        assert!(names.contains(&format!("{step}:done")), "{step}: {names:?}");
    }
    assert!(!has(&names, "stop"), "{names:?}");
    assert!(
        v["message"].as_str().unwrap().contains("blue/green"),
        "{v:#}"
    );
    let deploy_failed = failed(&samples).len();
    assert_eq!(deploy_failed, 0, "{}", few(&failed(&samples)));
    assert!(
        samples.iter().any(|x| x.body == "v2: a new page"),
        "the new release took traffic"
    );
    assert_eq!(version(public), "v2: a new page");
    assert_eq!(
        version(direct),
        "v2: a new page",
        "promoted to the main project"
    );
    assert!(version(&b.next).is_empty(), "the colour is gone");

    // 2. A release that fails its gate never takes traffic.
    s.set_healthy(false);
    s.commit("v3: broken");
    let load = Load::start(public);
    let (code, v) = s.deploy(&[]);
    let samples = load.finish();
    assert_eq!(code, 11, "{v:#}");
    let names = steps(&v);
    assert!(!has(&names, "switch"), "{names:?}");
    assert!(!has(&names, "stop_app"), "{names:?}");
    let gate_failed = failed(&samples).len();
    assert_eq!(gate_failed, 0, "{}", few(&failed(&samples)));
    assert!(samples.iter().all(|x| x.body == "v2: a new page"));
    assert_eq!(s.head(), s.remote_stable().unwrap(), "the code is back");

    // 3. A release that passes its gate, then fails while it takes traffic: traffic
    //    switches back to the warm old release.
    s.set_healthy(true);
    std::fs::write(s.dev().join("app/www/fail-after"), "5\n").unwrap();
    s.commit("v4: fails after five seconds");
    std::fs::remove_file(s.dev().join("app/www/fail-after")).unwrap();
    let load = Load::start(public);
    let (code, v) = s.deploy(&[]);
    let samples = load.finish();
    assert_eq!(code, 11, "{v:#}");
    let took = v["switch_back_ms"].as_u64().expect("a switch back");
    let (_, back) = step_window(&v, "switch_back").expect("a switch_back step");
    let after: Vec<&Sample> = samples.iter().filter(|x| x.sent > back).collect();
    let switch_back_failed = after.iter().filter(|x| x.status != Some(200)).count();
    assert!(after.len() > 10, "requests after the switch back");
    let bad: Vec<&Sample> = after
        .iter()
        .copied()
        .filter(|x| x.status != Some(200))
        .collect();
    assert_eq!(
        switch_back_failed,
        0,
        "switched back at {back}: {}",
        few(&bad)
    );
    assert!(after.iter().all(|x| x.body == "v2: a new page"));
    assert!(
        samples.iter().any(|x| x.body.starts_with("v4")),
        "the release took traffic before it failed"
    );
    assert!(took < 1000, "switch back took {took} ms");
    assert!(!has(&steps(&v), "stop_app"), "{:?}", steps(&v));

    // 4. A migration the old code cannot run beside: a maintenance window. Meanwhile a
    //    load on the app's own port sees what a stop/start deploy does to users.
    s.add_migration(
        "20261202000000_body_type",
        "ALTER TABLE messages ALTER COLUMN body TYPE varchar(500);",
    );
    s.commit("v5: body is varchar");
    let load = Load::start(public);
    let beside = Load::start(direct);
    let (code, v) = s.deploy(&[]);
    let samples = load.finish();
    let stop_start = beside.finish();
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("maintenance window"),
        "{v:#}"
    );
    let (from, _) = step_window(&v, "maintenance").expect("a maintenance step");
    let (until, _) = step_window(&v, "maintenance_off").expect("maintenance ended");
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.sent > from + jiff::SignedDuration::from_millis(50) && x.answered < until)
        .collect();
    let non_503 = inside.iter().filter(|x| x.status != Some(503)).count();
    assert!(inside.len() > 10, "requests during the window");
    assert_eq!(
        non_503,
        0,
        "{:?}",
        inside
            .iter()
            .filter(|x| x.status != Some(503))
            .take(5)
            .collect::<Vec<_>>()
    );
    let window = v["maintenance_ms"].as_u64().expect("the window's length") as f64 / 1000.0;
    let stop_start_failed = failed(&stop_start).len();
    assert!(
        stop_start_failed > 0,
        "a stop/start deploy refuses connections while the app restarts"
    );
    assert_eq!(version(public), "v5: body is varchar");

    println!(
        "zero-downtime: deploy failed={deploy_failed}, failed-gate failed={gate_failed}, switch-back failed={switch_back_failed} took={took} ms, maintenance non-503={non_503} window={window:.1} s, stop-start failed={stop_start_failed}"
    );
}

/// A deploy killed at either end of its watch is finished by `recover` with traffic on a
/// healthy release: during the watch (traffic on the new release), back to the warm
/// old one; while the watched release is promoted, the promotion. Its own stack, so it
/// runs beside the test above.
#[test]
fn a_deploy_killed_during_its_watch_or_while_promoted_is_finished_by_recover() {
    let Some(b) = BehindTheProxy::deployed(false) else {
        return;
    };
    let (s, public, direct) = (&b.s, b.public.as_str(), b.direct.as_str());

    // 1. Killed during the watch (traffic on the new release): `recover` puts traffic
    //    back on the warm old release and removes the colour.
    s.commit("v2: killed during its watch");
    let (code, _, _) = s.deploy_at_failpoint("watch:start", "");
    assert_eq!(code, -1, "killed");
    assert_eq!(
        route(s)["colour"],
        "green",
        "traffic was on the new release"
    );
    assert_eq!(
        proxy_check(s)["status"],
        "fail",
        "doctor sees traffic off the main project"
    );
    let (code, out, err) = s.stablehand(&["--json", "recover"]);
    assert_eq!(code, 11, "{out}\n{err}");
    let check = proxy_check(s);
    assert_eq!(check["status"], "ok", "{check}");
    assert_eq!(route(s)["upstream"], direct);
    assert_eq!(version(public), "v1: behind the proxy");
    assert!(version(&b.next).is_empty(), "the colour is gone");

    // 2. Killed while the watched release is promoted: `recover` finishes the promotion.
    s.commit("v3: killed while promoted");
    let (code, _, _) = s.deploy_at_failpoint("promote:start", "");
    assert_eq!(code, -1, "killed");
    let (code, out, err) = s.stablehand(&["--json", "recover"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(route(s)["upstream"], direct);
    assert_eq!(version(public), "v3: killed while promoted");
    assert_eq!(version(direct), "v3: killed while promoted");
    assert!(version(&b.next).is_empty(), "the colour is gone");
}
