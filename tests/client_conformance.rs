//! The client libraries' conformance scenario (`clients/conformance/scenario.json`) against the
//! real server: Python's runs under pytest, JavaScript's under Node's test runner, Rust's here.
//!
//! The fixture every runner gets (environment `AEROBRIDGE_CONFORMANCE`, JSON): an origin
//! aerobridge (the built-in flight model), an edge aerobridge relaying it through a proxy the
//! test can sever (so the edge's `data_valid` drops: "the source stops"), and proxies in front of
//! the edge's WebSocket and data ports that cut client connections mid-stream. The runners read
//! v1 reference frames from the edge's own data port and send the fixture one-line requests on
//! its control port.

mod common;

use common::proxy::Proxy;
use common::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const TOKEN: &str = "conformance-token";

/// The servers and proxies of one conformance run.
struct Fixture {
    _origin: Server,
    edge: Server,
    env: String,
}

impl Fixture {
    fn start() -> Fixture {
        let origin = Server::start(&[]);
        let source = Proxy::start(origin.data);
        let relay = format!("relay:tcp://{}", source.addr);
        let commands = format!("tcp://{}", origin.command);
        let edge = Server::start(&[
            "--source",
            &relay,
            "--relay-commands",
            &commands,
            "--command-token",
            TOKEN,
        ]);
        let edge_ws = edge.ws.expect("the edge's WebSocket port");
        let ws = Proxy::start(edge_ws);
        let tcp = Proxy::start(edge.data);
        let refused = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let control = TcpListener::bind("127.0.0.1:0").unwrap();
        let control_addr = control.local_addr().unwrap();
        let env = serde_json::json!({
            "ws": format!("ws://{}/", ws.addr),
            "tcp": format!("tcp://{}", tcp.addr),
            "reference": edge.data.to_string(),
            "control": control_addr.to_string(),
            "refused": refused.to_string(),
            "token": TOKEN,
            "scenario": format!("{}/clients/conformance/scenario.json", env!("CARGO_MANIFEST_DIR")),
        })
        .to_string();
        thread::spawn(move || {
            for conn in control.incoming() {
                let Ok(conn) = conn else { continue };
                let (ws, tcp, source) = (ws.clone(), tcp.clone(), source.clone());
                thread::spawn(move || serve_control(conn, &ws, &tcp, &source, edge_ws));
            }
        });
        Fixture {
            _origin: origin,
            edge,
            env,
        }
    }
}

/// One request per line: `cut`, `source stop`, `source start`, `subscriptions SESSION`.
fn serve_control(conn: TcpStream, ws: &Proxy, tcp: &Proxy, source: &Proxy, edge_ws: SocketAddr) {
    let mut out = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let answer = match line.trim() {
            "cut" => format!("ok {}", ws.cut() + tcp.cut()),
            "source stop" => {
                format!("ok {}", source.pause())
            }
            "source start" => {
                source.resume();
                "ok 0".to_string()
            }
            other => match other.strip_prefix("subscriptions ") {
                Some(session) => match subscriptions(edge_ws, session) {
                    Ok(n) => format!("ok {n}"),
                    Err(e) => format!("error {e}"),
                },
                None => format!("error unknown request {other:?}"),
            },
        };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Subscriptions the edge lists (`GET /connections`) for connections of `session`.
fn subscriptions(edge_ws: SocketAddr, session: &str) -> Result<usize, String> {
    let mut s = TcpStream::connect(edge_ws).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /connections HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let body = text.split_once("\r\n\r\n").ok_or("no HTTP body")?.1;
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    // /connections shows a session's first 8 characters.
    let prefix: String = session.chars().take(8).collect();
    Ok(v["connections"]
        .as_array()
        .ok_or("no connections list")?
        .iter()
        .filter(|c| {
            c["session"]
                .as_str()
                .is_some_and(|s| s.starts_with(&prefix))
        })
        .map(|c| c["subscriptions"].as_array().map_or(0, Vec::len))
        .sum())
}

/// Runs `program args` in `dir` with the fixture in the environment; asserts it succeeded and
/// returns its output.
fn run_runner(
    fixture: &Fixture,
    dir: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("AEROBRIDGE_CONFORMANCE", &fixture.env)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{text}\nedge log:\n{}",
        fixture.edge.log().join("\n")
    );
    text
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn python_client_passes_the_conformance_scenario() {
    let fixture = Fixture::start();
    let out = run_runner(
        &fixture,
        repo(),
        "python3",
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "clients/python/tests",
        ],
        &[(
            "PYTHONPATH",
            repo().join("clients/python").display().to_string(),
        )],
    );
    // Every test ran: the conformance tests skip only without the fixture, which is here.
    assert!(!out.contains("skipped"), "{out}");
    assert!(out.contains(" passed"), "{out}");
}

#[test]
fn js_client_passes_the_conformance_scenario() {
    let fixture = Fixture::start();
    let out = run_runner(
        &fixture,
        &repo().join("clients/js"),
        "node",
        &["--experimental-websocket", "--test", "test/"],
        &[],
    );
    assert!(
        out.contains("# fail 0") && out.contains("# skipped 0"),
        "{out}"
    );
    assert!(!out.contains("# pass 0"), "{out}");
}

// -- the Rust client (aerobridge_client::session) runs the scenario here -----------------------

use aerobridge_client::session::{Client, ClientError, Options};
use aerobridge_client::Value;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Condvar;
use std::time::Instant;

fn scenario() -> Json {
    let path = repo().join("clients/conformance/scenario.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_field(fixture: &Fixture, key: &str) -> String {
    let v: Json = serde_json::from_str(&fixture.env).unwrap();
    v[key].as_str().unwrap().to_string()
}

fn control(fixture: &Fixture, request: &str) -> usize {
    let mut s = TcpStream::connect(fixture_field(fixture, "control")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    writeln!(s, "{request}").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    let n = answer
        .trim()
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{request}: {answer}"));
    n.parse().unwrap()
}

/// v1 frames straight from the edge's data port, by update_counter.
#[derive(Default)]
struct Reference {
    frames: Mutex<BTreeMap<u64, Json>>,
    arrived: Condvar,
}

impl Reference {
    fn start(addr: SocketAddr) -> Arc<Reference> {
        let reference = Arc::new(Reference::default());
        let r = reference.clone();
        let mut lines = common::TcpLines::connect(addr);
        thread::spawn(move || loop {
            let frame = common::parse(&lines.frame());
            let mut frames = r.frames.lock().unwrap();
            frames.insert(
                frame["update_counter"].as_u64().unwrap(),
                frame["variables"].clone(),
            );
            if frames.len() > 6000 {
                frames.pop_first();
            }
            r.arrived.notify_all();
        });
        // A new subscriber may get its profile's current keyframe, up to a second old.
        reference.wait(
            |f| (f.len() >= 75).then_some(()),
            "reference frames for 1.5 s",
        );
        reference
    }

    fn wait<T>(&self, mut ready: impl FnMut(&BTreeMap<u64, Json>) -> Option<T>, what: &str) -> T
    where
        T: Sized,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut frames = self.frames.lock().unwrap();
        loop {
            if let Some(t) = ready(&frames) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not within 20 s: {what}");
            frames = self.arrived.wait_timeout(frames, left).unwrap().0;
        }
    }

    fn frame(&self, counter: u64) -> Json {
        self.wait(
            |f| {
                if let Some(&oldest) = f.keys().next() {
                    assert!(oldest <= counter, "reference frame {counter} is gone");
                }
                f.get(&counter).cloned()
            },
            &format!("reference frame {counter}"),
        )
    }
}

fn same(value: &Value, json: &Json) -> bool {
    match (value, json) {
        (Value::Num(x), Json::Number(n)) => Some(*x) == n.as_f64(),
        (Value::Text(s), Json::String(t)) => s == t,
        (Value::Null, Json::Null) => true,
        _ => false,
    }
}

/// Checks every update against the reference, in order.
struct Checker {
    reference: Arc<Reference>,
    last: Option<u64>,
    gaps: Vec<(u64, u64)>,
    rebuilt: BTreeMap<String, Value>,
    checked: usize,
}

impl Checker {
    fn check(&mut self, client: &Client, update: &aerobridge_client::session::Update) {
        let n = update.update_counter;
        let every = client.subscription().every;
        assert_eq!(
            n % every,
            0,
            "update {n} is not on the subscription's frames (every {every})"
        );
        assert!(
            self.last.is_none_or(|l| n > l),
            "update {n} after {:?}: repeated or going back",
            self.last
        );
        self.last = Some(n);
        for (name, v) in &update.values {
            self.rebuilt.insert(name.clone(), v.clone());
        }
        let reference = self.reference.frame(n);
        let names = &client.subscription().vars;
        assert!(!names.is_empty());
        for name in names {
            let rebuilt = &self.rebuilt[name];
            assert!(
                same(rebuilt, &reference[name]),
                "{name} at {n}: rebuilt {rebuilt:?}, v1 {}",
                reference[name]
            );
            let kind = &client
                .catalog()
                .iter()
                .find(|v| &v.name == name)
                .unwrap()
                .kind;
            assert!(
                matches!(
                    (kind.as_str(), rebuilt),
                    ("string", Value::Text(_)) | ("number", Value::Num(_))
                ),
                "{name}: {kind}"
            );
            if client.update_counter() == Some(n) {
                assert!(same(&client.state()[name], &reference[name]));
            }
        }
        self.checked += 1;
    }

    /// Reads updates (checking each) until `done` or the deadline.
    fn until(
        &mut self,
        client: &mut Client,
        what: &str,
        mut done: impl FnMut(&Client, usize) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let start = self.checked;
        while !done(client, self.checked - start) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "not within 20 s: {what} ({:?})",
                client.last_error
            );
            if let Some(u) = client
                .next_update(left.min(Duration::from_millis(50)))
                .unwrap()
            {
                self.check(client, &u);
            }
        }
    }
}

fn options(scenario: &Json, vars: Option<&Json>, token: &str) -> Options {
    let sub = &scenario["subscription"];
    let vars = vars.unwrap_or(&sub["vars"]);
    Options {
        vars: vars
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        hz: sub["hz"].as_f64(),
        delta: sub["mode"] == "delta",
        token: Some(token.to_string()),
        ..Options::default()
    }
}

fn run_rust_scenario(fixture: &Fixture, transport: &str) {
    let scenario = scenario();
    let reference = Reference::start(fixture.edge.data);
    let url = fixture_field(fixture, transport);
    let mut client = Client::connect(&url, options(&scenario, None, TOKEN)).unwrap();
    let session = client.session().unwrap().to_string();
    let mut checker = Checker {
        reference,
        last: None,
        gaps: Vec::new(),
        rebuilt: BTreeMap::new(),
        checked: 0,
    };
    for step in scenario["steps"].as_array().unwrap() {
        match step["step"].as_str().unwrap() {
            "updates" => {
                let count = step["count"].as_u64().unwrap() as usize;
                checker.until(&mut client, "updates", |_, n| n >= count);
            }
            "cut" => assert!(control(fixture, "cut") >= 1),
            "resumed" => {
                assert!(
                    client.reconnects() >= 1 && client.resumed() == Some(true),
                    "{:?}",
                    client.last_error
                );
                assert_eq!(client.session(), Some(session.as_str()));
                let subs = control(fixture, &format!("subscriptions {session}"));
                assert_eq!(subs as u64, step["subscriptions"].as_u64().unwrap());
            }
            "set" => {
                let name = step["variable"].as_str().unwrap();
                let result = client.set(name, step["value"].as_f64().unwrap());
                if step["ok"] == true {
                    let ack = result.unwrap();
                    assert!(ack.frame.is_some() || ack.relayed, "{ack:?}");
                } else {
                    let e: ClientError = result.unwrap_err();
                    assert_eq!(e.code, step["code"].as_str().unwrap(), "{e}");
                    assert!(
                        e.message.contains(step["message"].as_str().unwrap_or("")),
                        "{e}"
                    );
                }
            }
            "source" => {
                control(fixture, &format!("source {}", step["do"].as_str().unwrap()));
            }
            "stale" => {
                let expect = step["expect"].as_bool().unwrap();
                checker.until(&mut client, "stale", |c, _| c.stale() == expect);
            }
            other => panic!("unknown step {other}"),
        }
    }
    let allowed = 2 * (1 + client.reconnects()) as usize;
    assert!(
        checker.gaps.len() <= allowed,
        "gaps beyond the server's rules: {:?}",
        checker.gaps
    );
}

#[test]
fn rust_client_passes_the_conformance_scenario() {
    let fixture = Fixture::start();
    let scenario = scenario();
    for transport in scenario["transports"].as_array().unwrap() {
        run_rust_scenario(&fixture, transport.as_str().unwrap());
    }
    for case in scenario["errors"].as_array().unwrap() {
        let urls: Vec<String> = match case["url"].as_str() {
            Some(url) => vec![url.replace("{refused}", &fixture_field(&fixture, "refused"))],
            None => scenario["transports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| fixture_field(&fixture, t.as_str().unwrap()))
                .collect(),
        };
        for url in urls {
            let started = Instant::now();
            let token = case["token"].as_str().unwrap_or(TOKEN);
            let result = Client::connect(&url, options(&scenario, case.get("vars"), token))
                .and_then(|mut c| {
                    let set = &case["set"];
                    c.set(
                        set["variable"].as_str().unwrap(),
                        set["value"].as_f64().unwrap(),
                    )
                    .map(|_| ())
                });
            let e = result.expect_err(case["case"].as_str().unwrap());
            assert_eq!(e.code, case["code"].as_str().unwrap(), "{url}: {e}");
            assert!(
                e.message
                    .contains(case["message_contains"].as_str().unwrap_or("")),
                "{e}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{url}: {e} took {:?}",
                started.elapsed()
            );
        }
    }
}
