//! Session protocol v2 clients that verify what they rebuild. Each subscribes to one profile
//! (a variable set, a rate, a mode), rebuilds the full state from keyframes and deltas, and
//! compares it with the v1 frame of the same `update_counter`, which a plain v1 reference client
//! on the same thread records. Every mismatch, every delta whose base never came, and every
//! jump in `seq` larger than the subscription's `every` is counted.

use crate::client::{Shared, Transport};
use aerobridge::telemetry::VARIABLES;
use aerobridge::ws::frame::decode_header;
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use serde::{Deserialize, Serialize};
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a v2 client subscribes to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Names or `Prefix.*` patterns; empty: every variable.
    pub vars: Vec<String>,
    /// Wanted rate (None: the broadcast rate).
    pub hz: Option<f64>,
    /// `full` or `delta`.
    pub mode: String,
}

/// v2 figures of one thread (merged by addition).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct V2Stats {
    pub clients: u64,
    pub connected: u64,
    /// Data messages (keyframes + deltas) received in the window.
    pub messages: u64,
    pub keyframes: u64,
    pub deltas: u64,
    /// Rebuilt states compared with the v1 frame of the same update_counter.
    pub verified: u64,
    /// Rebuilt states that differed from it (any value).
    pub mismatches: u64,
    /// States whose v1 frame the reference no longer (or never) had.
    pub unverifiable: u64,
    /// Deltas whose base keyframe the client never received.
    pub broken_chain: u64,
    /// Places where seq jumped by more than the subscription's `every`.
    pub gaps: u64,
    /// Messages on frames where `update_counter % every != 0`.
    pub off_grid: u64,
    /// Bytes received in the window.
    pub bytes: u64,
    /// Distinct profile ids acked.
    #[serde(default)]
    pub profiles: Vec<u64>,
    pub disconnects: std::collections::BTreeMap<String, u64>,
}

impl V2Stats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, o: &V2Stats) {
        self.clients += o.clients;
        self.connected += o.connected;
        self.messages += o.messages;
        self.keyframes += o.keyframes;
        self.deltas += o.deltas;
        self.verified += o.verified;
        self.mismatches += o.mismatches;
        self.unverifiable += o.unverifiable;
        self.broken_chain += o.broken_chain;
        self.gaps += o.gaps;
        self.off_grid += o.off_grid;
        self.bytes += o.bytes;
        for p in &o.profiles {
            if !self.profiles.contains(p) {
                self.profiles.push(*p);
            }
        }
        for (k, v) in &o.disconnects {
            *self.disconnects.entry(k.clone()).or_default() += v;
        }
    }
}

/// One value as both protocols carry it (numbers compared bit for bit after parsing the same
/// text).
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Num(u64),
    Str(Rc<str>),
    Null,
    Other,
}

fn val(v: &BorrowedValue<'_>) -> Val {
    if let Some(s) = v.as_str() {
        Val::Str(s.into())
    } else if v.is_null() {
        Val::Null
    } else if let Some(f) = v.cast_f64() {
        Val::Num(f.to_bits())
    } else {
        Val::Other
    }
}

/// The v1 frames of the last few seconds, by update_counter, values in wire order.
#[derive(Default)]
pub struct Reference {
    frames: VecDeque<(u64, Rc<Vec<Val>>)>,
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
            .map(|var| vars.get(var.name).map_or(Val::Other, val))
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
    Found(Rc<Vec<Val>>),
    NotYet,
    Gone,
}

/// Records every v1 frame into `reference` until the run is done.
pub async fn run_reference(shared: std::sync::Arc<Shared>, reference: Rc<RefCell<Reference>>) {
    let Ok(stream) = TcpStream::connect(shared.targets.tcp).await else {
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
        let mut s = &stream;
        let BufResult(res, b) = s.append(buf).await;
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
    /// Wire index of each subscribed position.
    wire: Vec<usize>,
    every: u64,
    keys: VecDeque<(u64, Vec<Val>)>,
    last_seq: Option<u64>,
    pending: VecDeque<(u64, Vec<Val>)>,
    subscribed: bool,
}

impl Client<'_> {
    fn measuring(&self) -> bool {
        self.shared.measuring.load(Ordering::Relaxed)
    }

    /// Handles one message; `Err` ends the client with that reason.
    fn on_message(&mut self, text: &mut [u8]) -> Result<(), String> {
        let v = simd_json::to_borrowed_value(text).map_err(|_| "bad_json".to_string())?;
        let op = v.get("op").and_then(|o| o.as_str()).unwrap_or("");
        match op {
            "welcome" | "hb" | "pong" => Ok(()),
            "ack" if !self.subscribed => {
                if v.get("ok").and_then(|o| o.as_bool()) != Some(true) {
                    let code = v
                        .get("error")
                        .and_then(|e| e.get("code"))
                        .and_then(|c| c.as_str())
                        .unwrap_or("?");
                    return Err(format!("sub_refused_{code}"));
                }
                let names = v
                    .get("vars")
                    .and_then(|n| n.as_array())
                    .ok_or("ack_without_vars")?;
                let index: HashMap<&str, usize> = VARIABLES
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.name, i))
                    .collect();
                self.wire = names
                    .iter()
                    .map(|n| n.as_str().and_then(|n| index.get(n).copied()))
                    .collect::<Option<_>>()
                    .ok_or("unknown_name_in_ack")?;
                self.every = v.get("every").and_then(|e| e.as_u64()).unwrap_or(1);
                let profile = v.get("profile").and_then(|p| p.as_u64()).unwrap_or(0);
                let mut st = self.stats.borrow_mut();
                if !st.profiles.contains(&profile) {
                    st.profiles.push(profile);
                }
                self.subscribed = true;
                Ok(())
            }
            "key" | "delta" => self.on_data(&v, op == "key"),
            "error" => Err(format!(
                "error_{}",
                v.get("code").and_then(|c| c.as_str()).unwrap_or("?")
            )),
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, v: &BorrowedValue<'_>, key: bool) -> Result<(), String> {
        let seq = v.get("seq").and_then(|s| s.as_u64()).ok_or("no_seq")?;
        let t = v.get("t").and_then(|s| s.as_u64()).unwrap_or(0);
        let measuring = self.measuring();
        let state = if key {
            let values: Vec<Val> = v
                .get("v")
                .and_then(|a| a.as_array())
                .ok_or("key_without_v")?
                .iter()
                .map(val)
                .collect();
            if self.keys.len() == 4 {
                self.keys.pop_front();
            }
            self.keys.push_back((seq, values.clone()));
            values
        } else {
            let base = v.get("base").and_then(|s| s.as_u64()).ok_or("no_base")?;
            let Some((_, base_values)) = self.keys.iter().find(|(s, _)| *s == base) else {
                if measuring {
                    self.stats.borrow_mut().broken_chain += 1;
                }
                return Ok(());
            };
            let mut values = base_values.clone();
            for c in v
                .get("c")
                .and_then(|c| c.as_array())
                .ok_or("delta_without_c")?
            {
                let pos = c
                    .get_idx(0)
                    .and_then(|p| p.as_usize())
                    .ok_or("bad_change")?;
                if let (Some(slot), Some(value)) = (values.get_mut(pos), c.get_idx(1)) {
                    *slot = val(value);
                }
            }
            values
        };
        let last = self.last_seq.replace(seq);
        if !measuring {
            return Ok(());
        }
        {
            let mut st = self.stats.borrow_mut();
            st.messages += 1;
            if key {
                st.keyframes += 1;
            } else {
                st.deltas += 1;
            }
            if seq % self.every != 0 {
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
        Ok(())
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
                wire: Vec::new(),
                every: 1,
                keys: VecDeque::new(),
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

async fn connect(transport: Transport, shared: &Shared) -> io::Result<(TcpStream, Vec<u8>)> {
    match transport {
        Transport::Tcp => {
            let s = TcpStream::connect(shared.targets.tcp).await?;
            s.set_nodelay(true)?;
            let mut w = &s;
            let BufResult(res, _) = w
                .write_all(b"{\"op\":\"hello\",\"protocol\":2,\"client\":\"loadtest\"}\n".to_vec())
                .await;
            res?;
            Ok((s, Vec::new()))
        }
        Transport::Ws => {
            crate::client::connect_ws_with(
                shared.targets.ws,
                "Sec-WebSocket-Protocol: aerobridge.v2\r\n",
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
    stream: &TcpStream,
    leftover: Vec<u8>,
    transport: Transport,
    profile: &Profile,
    client: &mut Client<'_>,
) -> Option<String> {
    let sub = sub_request(profile);
    let request = match transport {
        Transport::Tcp => format!("{sub}\n").into_bytes(),
        Transport::Ws => {
            aerobridge::ws::reader::client_frame(true, 1, sub.as_bytes(), [1, 2, 3, 4])
        }
    };
    let mut w = stream;
    if w.write_all(request).await.0.is_err() {
        return Some("write_failed".into());
    }
    let mut buf = leftover;
    buf.reserve(256 * 1024);
    let mut since_hb = std::time::Instant::now();
    loop {
        let mut pos = 0;
        match transport {
            Transport::Tcp => {
                while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
                    let line = pos..pos + nl;
                    pos += nl + 1;
                    // v1 lines before the welcome (the switch is at a frame boundary).
                    if buf[line.clone()].starts_with(b"{\"schema\"") {
                        continue;
                    }
                    if let Err(e) = client.on_message(&mut buf[line]) {
                        return Some(e);
                    }
                }
            }
            Transport::Ws => {
                while let Some(h) = decode_header(&buf[pos..]) {
                    let end = pos + h.header_len + h.payload_len as usize;
                    if buf.len() < end {
                        break;
                    }
                    let payload = pos + h.header_len..end;
                    pos = end;
                    match h.opcode {
                        1 => {
                            if let Err(e) = client.on_message(&mut buf[payload]) {
                                return Some(e);
                            }
                        }
                        8 => return Some("close".into()),
                        _ => {}
                    }
                }
            }
        }
        buf.drain(..pos);
        if client.shared.done.load(Ordering::Relaxed) {
            return None;
        }
        // Tell the server we are alive (the idle rule wants something every 30 s).
        if since_hb.elapsed() > Duration::from_secs(20) {
            since_hb = std::time::Instant::now();
            let hb = match transport {
                Transport::Tcp => b"{\"op\":\"hb\"}\n".to_vec(),
                Transport::Ws => {
                    aerobridge::ws::reader::client_frame(true, 1, b"{\"op\":\"hb\"}", [1, 2, 3, 4])
                }
            };
            let _ = w.write_all(hb).await;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(128 * 1024);
        }
        let mut r = stream;
        let BufResult(res, b) = r.append(buf).await;
        buf = b;
        match res {
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
