//! Session protocol v2 clients that verify what they rebuild. Each subscribes to one profile
//! (a variable set, a rate, a mode), rebuilds the full state from keyframes and deltas, and
//! compares it with the v1 frame of the same `update_counter`, which a plain v1 reference client
//! on the same thread records. Every mismatch, every delta whose base never came, and every
//! jump in `seq` larger than the subscription's `every` is counted.

use crate::conn::Conn;
use crate::model::{Profile, Shared, Transport, V2Stats};
use aerobridge::telemetry::VARIABLES;
use aerobridge_client::v2::{Event, V2State, Value, HEARTBEAT};
use aerobridge_client::{FrameReader, Framing, Message};
use compio::net::TcpStream;
use simd_json::prelude::*;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The v1 frames of the last few seconds, by update_counter, values in wire order.
#[derive(Default)]
pub struct Reference {
    frames: VecDeque<(u64, Rc<Vec<Value>>)>,
}

impl Reference {
    const KEEP: usize = 400;

    fn push(&mut self, frame: &mut [u8]) {
        let Ok(v) = simd_json::to_borrowed_value(frame) else {
            return;
        };
        let (Some(counter), Some(vars)) = (
            v.get("update_counter").and_then(|c| c.as_u64()),
            v.get("variables").and_then(|o| o.as_object()),
        ) else {
            return;
        };
        let values = VARIABLES
            .iter()
            .map(|var| vars.get(var.name).map_or(Value::Null, Value::of))
            .collect();
        if self.frames.len() == Self::KEEP {
            self.frames.pop_front();
        }
        self.frames.push_back((counter, Rc::new(values)));
    }

    fn get(&self, counter: u64) -> Lookup {
        match (self.frames.front(), self.frames.back()) {
            (Some((first, _)), Some((last, _))) if counter >= *first && counter <= *last => {
                match self.frames.binary_search_by_key(&counter, |(c, _)| *c) {
                    Ok(i) => Lookup::Found(Rc::clone(&self.frames[i].1)),
                    Err(_) => Lookup::Gone,
                }
            }
            (_, Some((last, _))) if counter > *last => Lookup::NotYet,
            (None, None) => Lookup::NotYet,
            _ => Lookup::Gone,
        }
    }
}

enum Lookup {
    Found(Rc<Vec<Value>>),
    NotYet,
    Gone,
}

/// Records every v1 frame into `reference` until the run is done.
pub async fn run_reference(shared: std::sync::Arc<Shared>, reference: Rc<RefCell<Reference>>) {
    let stream = match TcpStream::connect(shared.targets.tcp).await {
        Ok(s) => Conn::wrap(s, shared.tls.as_ref()).await,
        Err(e) => Err(e),
    };
    let Ok(stream) = stream else {
        return;
    };
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    while !shared.done.load(Ordering::Relaxed) {
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
            reference.borrow_mut().push(&mut buf[pos..pos + nl]);
            pos += nl + 1;
        }
        buf.drain(..pos);
        buf.reserve(128 * 1024);
        let (res, b) = stream.append(buf, 64 * 1024).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

struct Client<'a> {
    shared: &'a Shared,
    stats: &'a RefCell<V2Stats>,
    latency: &'a RefCell<hdrhistogram::Histogram<u64>>,
    reference: &'a RefCell<Reference>,
    /// The session's subscriptions and rebuilt states (the client crate's, as any user's).
    state: V2State,
    /// Wire index of each subscribed position.
    wire: Vec<usize>,
    every: u64,
    last_seq: Option<u64>,
    pending: VecDeque<(u64, Vec<Value>)>,
    subscribed: bool,
}

impl Client<'_> {
    fn measuring(&self) -> bool {
        self.shared.measuring.load(Ordering::Relaxed)
    }

    /// Handles one message; `Err` ends the client with that reason.
    fn on_message(&mut self, text: &mut [u8]) -> Result<(), String> {
        match self
            .state
            .on_message(text)
            .map_err(|_| "bad_json".to_string())?
        {
            Event::Ack {
                ok: false, error, ..
            } if !self.subscribed => Err(format!(
                "sub_refused_{}",
                error.map_or("?".to_string(), |(code, _)| code)
            )),
            Event::Subscribed { profile, every, .. } if !self.subscribed => {
                let index: HashMap<&str, usize> = VARIABLES
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.name, i))
                    .collect();
                self.wire = self.state.profiles[&profile]
                    .names
                    .iter()
                    .map(|n| index.get(n.as_str()).copied())
                    .collect::<Option<_>>()
                    .ok_or("unknown_name_in_ack")?;
                self.every = every;
                let mut st = self.stats.borrow_mut();
                if !st.profiles.contains(&profile) {
                    st.profiles.push(profile);
                }
                self.subscribed = true;
                Ok(())
            }
            Event::Data {
                profile,
                seq,
                t,
                key,
                ..
            } => {
                let state = self.state.profiles[&profile].values.clone();
                self.on_data(seq, t, key, state);
                Ok(())
            }
            Event::BrokenChain { .. } => {
                if self.measuring() {
                    self.stats.borrow_mut().broken_chain += 1;
                }
                Ok(())
            }
            Event::Error { code, .. } => Err(format!("error_{code}")),
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, seq: u64, t: u64, key: bool, state: Vec<Value>) {
        let last = self.last_seq.replace(seq);
        if !self.measuring() {
            return;
        }
        {
            let mut st = self.stats.borrow_mut();
            st.messages += 1;
            if key {
                st.keyframes += 1;
            } else {
                st.deltas += 1;
            }
            if !seq.is_multiple_of(self.every) {
                st.off_grid += 1;
            }
            // A keyframe the queue sends before a delta may repeat an older seq: only forward
            // jumps count.
            if let Some(l) = last {
                if seq > l + self.every {
                    st.gaps += 1;
                }
            }
        }
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let _ = self
            .latency
            .borrow_mut()
            .record(wall_us.saturating_sub(t).clamp(1, 60_000_000));
        self.pending.push_back((seq, state));
        self.verify();
    }

    /// Compares the pending states whose v1 frame has arrived.
    fn verify(&mut self) {
        let reference = self.reference.borrow();
        let mut st = self.stats.borrow_mut();
        while let Some((seq, state)) = self.pending.front() {
            match reference.get(*seq) {
                Lookup::NotYet if self.pending.len() <= 8 => break,
                Lookup::NotYet | Lookup::Gone => st.unverifiable += 1,
                Lookup::Found(frame) => {
                    st.verified += 1;
                    if self
                        .wire
                        .iter()
                        .zip(state)
                        .any(|(&w, value)| frame[w] != *value)
                    {
                        st.mismatches += 1;
                    }
                }
            }
            self.pending.pop_front();
        }
    }
}

/// Runs one v2 client until the run is done.
pub async fn run_client(
    transport: Transport,
    profile: Profile,
    shared: std::sync::Arc<Shared>,
    stats: Rc<RefCell<V2Stats>>,
    latency: Rc<RefCell<hdrhistogram::Histogram<u64>>>,
    reference: Rc<RefCell<Reference>>,
) {
    stats.borrow_mut().clients += 1;
    shared.attempted.fetch_add(1, Ordering::Relaxed);
    let end = match connect(transport, &shared).await {
        Ok((stream, leftover)) => {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            stats.borrow_mut().connected += 1;
            let mut client = Client {
                shared: &shared,
                stats: &stats,
                latency: &latency,
                reference: &reference,
                state: V2State::default(),
                wire: Vec::new(),
                every: 1,
                last_seq: None,
                pending: VecDeque::new(),
                subscribed: false,
            };
            run(&stream, leftover, transport, &profile, &mut client).await
        }
        Err(e) => Some(format!("connect_failed: {:?}", e.kind()).to_lowercase()),
    };
    if let Some(reason) = end {
        if !shared.done.load(Ordering::Relaxed) {
            *stats.borrow_mut().disconnects.entry(reason).or_default() += 1;
        }
    }
}

async fn connect(transport: Transport, shared: &Shared) -> io::Result<(Conn, Vec<u8>)> {
    match transport {
        Transport::Tcp => {
            let s = TcpStream::connect(shared.targets.tcp).await?;
            s.set_nodelay(true)?;
            let s = Conn::wrap(s, shared.tls.as_ref()).await?;
            s.write_all(b"{\"op\":\"hello\",\"protocol\":2,\"client\":\"loadtest\"}\n".to_vec())
                .await?;
            Ok((s, Vec::new()))
        }
        Transport::Ws => {
            crate::client::connect_ws_with(
                shared.targets.ws,
                "Sec-WebSocket-Protocol: aerobridge.v2\r\n",
                shared.tls.as_ref(),
            )
            .await
        }
    }
}

fn sub_request(profile: &Profile) -> String {
    let mut req = serde_json::json!({"op":"sub","id":1,"mode":profile.mode});
    if profile.vars.iter().any(|v| v.starts_with('-')) {
        // `-Name` leaves a variable out of everything (or out of the names given): profiles of
        // nearly the same size that are still distinct.
        let (minus, plus): (Vec<&String>, Vec<&String>) =
            profile.vars.iter().partition(|v| v.starts_with('-'));
        let names: Vec<&str> = VARIABLES
            .iter()
            .map(|v| v.name)
            .filter(|n| plus.is_empty() || plus.iter().any(|p| p.as_str() == *n))
            .filter(|n| !minus.iter().any(|m| &m[1..] == *n))
            .collect();
        req["vars"] = serde_json::json!(names);
    } else if !profile.vars.is_empty() {
        req["vars"] = serde_json::json!(profile.vars);
    }
    if let Some(hz) = profile.hz {
        req["hz"] = serde_json::json!(hz);
    }
    req.to_string()
}

async fn run(
    stream: &Conn,
    leftover: Vec<u8>,
    transport: Transport,
    profile: &Profile,
    client: &mut Client<'_>,
) -> Option<String> {
    let sub = sub_request(profile);
    let request = match transport {
        Transport::Tcp => format!("{sub}\n").into_bytes(),
        Transport::Ws => aerobridge_client::client_text(sub.as_bytes()),
    };
    if stream.write_all(request).await.is_err() {
        return Some("write_failed".into());
    }
    let framing = match transport {
        Transport::Tcp => Framing::Lines,
        Transport::Ws => Framing::WebSocket,
    };
    let mut reader = FrameReader::new(framing, leftover);
    let mut since_hb = std::time::Instant::now();
    loop {
        while let Some(next) = reader.next_message() {
            match next {
                // v1 lines before the welcome (the switch is at a frame boundary).
                Ok(Message::Text(text)) if text.starts_with(b"{\"schema\"") => {}
                Ok(Message::Text(text)) => {
                    if let Err(e) = client.on_message(text) {
                        return Some(e);
                    }
                }
                Ok(Message::Close(..)) => return Some("close".into()),
                _ => {}
            }
        }
        if client.shared.done.load(Ordering::Relaxed) {
            return None;
        }
        // Tell the server we are alive (the idle rule wants something every 30 s).
        if since_hb.elapsed() > Duration::from_secs(20) {
            since_hb = std::time::Instant::now();
            let hb = match transport {
                Transport::Tcp => format!("{HEARTBEAT}\n").into_bytes(),
                Transport::Ws => aerobridge_client::client_text(HEARTBEAT.as_bytes()),
            };
            let _ = stream.write_all(hb).await;
        }
        match crate::client::read_more(stream, &mut reader).await {
            Ok(0) => return Some("eof".into()),
            Ok(n) => {
                if client.measuring() {
                    client.stats.borrow_mut().bytes += n as u64;
                }
            }
            Err(e) => return Some(format!("{:?}", e.kind()).to_lowercase()),
        }
    }
}
