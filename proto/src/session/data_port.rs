//! The TCP telemetry port (12345): frames go out; what a client sends is split into lines.
//! In v1 (upstream's protocol) every line is ignored except a `hello`, which switches the
//! connection to v2 ([`super::messages`]); from then on each line is a v2 op (or a v1 command
//! object) and replies go out in the framing the `hello` chose.

use super::messages::Messages;
use super::v2::Clock;
use super::{Action, Applied, Outbox, Session, Settings};
use crate::command::{Line, LineSplitter};
use crate::packet::Framing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One telemetry connection on the TCP data port.
#[derive(Debug)]
pub struct DataSession {
    splitter: LineSplitter,
    messages: Messages,
}

impl DataSession {
    /// A new connection from `peer` (for logs).
    pub fn new(settings: Arc<Settings>, peer: SocketAddr, now: Instant) -> Self {
        Self {
            // v2 requests (a `sub` naming many variables) can be long: the WebSocket limit.
            splitter: LineSplitter::new(settings.ws_max_message),
            messages: Messages::new(settings, None, Framing::Lines, peer, now),
        }
    }

    /// Whether a batch is with the tick (feed nothing until [`applied`](Self::applied)).
    pub fn is_waiting(&self) -> bool {
        self.messages.is_waiting()
    }

    /// Whether the session has ended (its last action was a Close).
    pub fn is_closed(&self) -> bool {
        self.messages.is_closed()
    }

    /// Whether the connection speaks v2.
    pub fn is_v2(&self) -> bool {
        self.messages.is_v2()
    }

    /// When [`on_timeout`](Self::on_timeout) is due (v2 only: v1 clients may stay silent).
    pub fn deadline(&self) -> Option<Instant> {
        self.messages.deadline()
    }

    /// What the shell knows of the world now.
    pub fn set_clock(&mut self, clock: Clock) {
        self.messages.set_clock(clock);
    }

    /// Bytes from the peer.
    pub fn on_bytes(&mut self, data: &[u8], now: Instant, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        self.messages.touch(now);
        self.splitter.extend(data);
        self.process(now, out);
    }

    /// v2's heartbeat or idle disconnect.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.messages.on_timeout(now, out);
    }

    /// The connection ended at `now` (for any reason): the last actions, a v2 session's
    /// [`Action::Park`].
    pub fn finish(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.messages.finish(now, out);
    }

    /// The tick's answer to the last [`Action::Submit`]; then the buffered lines go on.
    pub fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.messages.applied(result, stopping, now, out);
        self.process(now, out);
    }

    fn process(&mut self, now: Instant, out: &mut Vec<Action>) {
        while !self.is_waiting() && !self.is_closed() {
            match self.splitter.next_line() {
                None => break,
                Some(Line::Text(line)) => {
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        self.messages.on_message(line, now, out);
                    }
                }
                Some(Line::TooLong) => {
                    let limit = self.splitter.max_line();
                    self.messages.too_long(limit, out);
                }
            }
        }
        self.splitter.shrink_if_empty();
    }
}

/// A TCP data-port connection as a [`Session`]. Most upstream clients never send a byte, so
/// everything but the settings and the peer (the [`DataSession`]: line splitter, v2 state; the
/// outbox) is allocated only once something happens: an idle client costs a few words.
#[derive(Debug)]
pub struct DataPort {
    settings: Arc<Settings>,
    peer: SocketAddr,
    started: Option<Box<Started>>,
}

/// A data-port connection that has sent something (or ended).
#[derive(Debug)]
struct Started {
    /// `None` once the peer's stream ended before it said anything.
    session: Option<DataSession>,
    /// The clock the shell gave before the session existed.
    clock: Option<Clock>,
    outbox: Outbox,
}

impl DataPort {
    /// A new connection from `peer` (for logs).
    pub fn new(settings: Arc<Settings>, peer: SocketAddr) -> Self {
        Self {
            settings,
            peer,
            started: None,
        }
    }

    /// Whether the connection speaks v2.
    pub fn is_v2(&self) -> bool {
        self.session().is_some_and(|s| s.is_v2())
    }

    fn session(&self) -> Option<&DataSession> {
        self.started.as_ref().and_then(|s| s.session.as_ref())
    }

    fn started(&mut self) -> &mut Started {
        self.started.get_or_insert_with(|| {
            Box::new(Started {
                session: None,
                clock: None,
                outbox: Outbox::default(),
            })
        })
    }
}

impl Session for DataPort {
    fn set_clock(&mut self, clock: Clock) {
        match self.started.as_deref_mut() {
            Some(Started {
                session: Some(s), ..
            }) => s.set_clock(clock),
            // Before the first bytes: kept for the session they create.
            Some(started) => started.clock = Some(clock),
            None => self.started().clock = Some(clock),
        }
    }

    fn receive(&mut self, bytes: &[u8], now: Instant) {
        let (settings, peer) = (Arc::clone(&self.settings), self.peer);
        let started = self.started();
        let clock = started.clock.take();
        let s = started.session.get_or_insert_with(|| {
            let mut s = DataSession::new(settings, peer, now);
            if let Some(clock) = clock {
                s.set_clock(clock);
            }
            s
        });
        let mut out = Vec::new();
        s.on_bytes(bytes, now, &mut out);
        started.outbox.extend(out);
    }

    fn eof(&mut self, _now: Instant) {
        self.started().outbox.push(Action::Close {
            reason: crate::Disconnect::PeerClosed,
            frame: None,
        });
    }

    fn timeout(&mut self, now: Instant) {
        if let Some(Started {
            session: Some(s),
            outbox,
            ..
        }) = self.started.as_deref_mut()
        {
            let mut out = Vec::new();
            s.on_timeout(now, &mut out);
            outbox.extend(out);
        }
    }

    fn applied(&mut self, result: Option<Applied>, stopping: bool, now: Instant) {
        if let Some(Started {
            session: Some(s),
            outbox,
            ..
        }) = self.started.as_deref_mut()
        {
            let mut out = Vec::new();
            s.applied(result, stopping, now, &mut out);
            outbox.extend(out);
        }
    }

    fn finish(&mut self, now: Instant) {
        if let Some(Started {
            session: Some(s),
            outbox,
            ..
        }) = self.started.as_deref_mut()
        {
            let mut out = Vec::new();
            s.finish(now, &mut out);
            outbox.extend(out);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.started.as_mut()?.outbox.pop()
    }

    fn deadline(&self) -> Option<Instant> {
        self.session().and_then(|s| s.deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Disconnect;
    use std::time::Duration;

    fn session(now: Instant) -> DataSession {
        let mut settings = crate::session::test_settings(false);
        settings.v2.limits.heartbeat = Duration::from_secs(1);
        settings.v2.limits.idle_timeout = Duration::from_secs(90);
        DataSession::new(Arc::new(settings), "127.0.0.1:1".parse().unwrap(), now)
    }

    /// The JSON of every `Send`, in order (lines framing).
    fn sent(out: &[Action]) -> Vec<serde_json::Value> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => Some(
                    serde_json::from_slice(bytes.strip_suffix(b"\n").expect("a line")).unwrap(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_data_port_session_exists_only_once_the_client_speaks() {
        use crate::session::Session;
        let t0 = Instant::now();
        let settings = Arc::new(crate::session::test_settings(false));
        let mut port = DataPort::new(settings, "127.0.0.1:1".parse().unwrap());
        port.timeout(t0);
        assert!(
            port.started.is_none() && port.deadline().is_none(),
            "v1: no timer"
        );
        port.receive(b"{\"op\":\"hello\"}\n", t0);
        assert!(port.is_v2() && port.deadline().is_some());
        let actions: Vec<Action> = std::iter::from_fn(|| port.poll_action()).collect();
        assert_eq!(actions[0], Action::EnterV2(Framing::Lines));
        port.eof(t0);
        assert!(matches!(
            port.poll_action(),
            Some(Action::Close {
                reason: Disconnect::PeerClosed,
                ..
            })
        ));
    }

    #[test]
    fn an_ended_session_is_parked_by_action_and_resumed_by_id() {
        let t0 = Instant::now();
        let settings = Arc::new(crate::session::test_settings(false));
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut first = DataSession::new(Arc::clone(&settings), peer, t0);
        let mut out = Vec::new();
        first.on_bytes(
            b"{\"op\":\"hello\"}\n{\"op\":\"sub\",\"id\":3,\"vars\":[\"Aircraft.Altitude\"],\"hz\":10}\n",
            t0,
            &mut out,
        );
        let session = sent(&out)[0]["session"].as_str().unwrap().to_string();
        out.clear();
        // Nothing is parked until the shell says the connection ended: no Drop side effect.
        assert_eq!(settings.v2.parked.sweep(t0), 0);
        first.finish(t0, &mut out);
        let [Action::Park(parked)] = &out[..] else {
            panic!("the last word of an ended v2 session is Park: {out:?}")
        };
        assert_eq!(parked.id(), session);
        assert_eq!(parked.expires(), t0 + settings.v2.limits.resume_window);
        settings.v2.parked.park((**parked).clone(), t0);
        drop(first);
        assert_eq!(settings.v2.parked.sweep(t0), 1);

        let mut second = DataSession::new(Arc::clone(&settings), peer, t0);
        out.clear();
        second.on_bytes(
            format!("{{\"op\":\"hello\",\"resume\":\"{session}\"}}\n").as_bytes(),
            t0 + Duration::from_secs(1),
            &mut out,
        );
        let replies = sent(&out);
        assert_eq!(replies[0]["session"].as_str(), Some(session.as_str()));
        assert_eq!(replies[0]["resumed"].as_bool(), Some(true));
        assert_eq!(replies[1]["sub"].as_u64(), Some(3), "{replies:?}");
        assert_eq!(settings.v2.parked.sweep(t0), 0, "taken by the resume");
    }

    #[test]
    fn parked_sessions_expire_in_order_without_a_scan() {
        use crate::session::v2::Parked;
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut settings = crate::session::test_settings(false);
        settings.v2.limits.resume_window = window;
        let settings = Arc::new(settings);
        let parked = Parked::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut ids = Vec::new();
        for i in 0..3u64 {
            let now = t0 + Duration::from_secs(i * 10);
            let mut s = DataSession::new(Arc::clone(&settings), peer, now);
            let mut out = Vec::new();
            s.on_bytes(b"{\"op\":\"hello\"}\n", now, &mut out);
            ids.push(sent(&out)[0]["session"].as_str().unwrap().to_string());
            out.clear();
            s.finish(now, &mut out);
            let Some(Action::Park(p)) = out.pop() else {
                panic!("parked")
            };
            parked.park(*p, now);
        }
        assert_eq!(parked.sweep(t0 + window), 2, "the first expired");
        assert!(parked.take(&ids[0], t0 + window).is_none());
        assert!(parked.take(&ids[2], t0 + window).is_some());
        assert_eq!(parked.sweep(t0 + window), 1);
        assert_eq!(parked.sweep(t0 + window + Duration::from_secs(10)), 0);
    }

    #[test]
    fn v1_lines_are_ignored_and_hello_enters_v2_at_once() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut out = Vec::new();
        s.on_bytes(
            b"garbage\n{\"variable\":\"Controls.Gear\",\"value\":1,\"id\":1}\n{\"op\":\"sub\"}\n",
            t0,
            &mut out,
        );
        assert!(out.is_empty(), "v1 data port: ignored, {out:?}");
        assert!(s.deadline().is_none(), "v1 clients have no timer");
        s.on_bytes(
            b"{\"op\":\"hello\",\"id\":5}\n{\"op\":\"sub\",\"id\":2,\"vars\":[\"Aircraft.Alt",
            t0,
            &mut out,
        );
        assert_eq!(out[0], Action::EnterV2(Framing::Lines));
        let welcome = &sent(&out)[0];
        assert_eq!(
            (welcome["op"].as_str(), welcome["id"].as_u64()),
            (Some("welcome"), Some(5))
        );
        out.clear();
        // The rest of the sub arrives in a second read.
        s.on_bytes(b"itude\"],\"hz\":10,\"mode\":\"delta\"}\n", t0, &mut out);
        let ack = &sent(&out)[0];
        assert_eq!(ack["vars"], serde_json::json!(["Aircraft.Altitude"]));
        assert_eq!(
            (ack["every"].as_u64(), ack["sub"].as_u64()),
            (Some(5), Some(2))
        );
        let Some(Action::Profiles {
            profiles,
            keyframes,
        }) = out.iter().find(|a| matches!(a, Action::Profiles { .. }))
        else {
            panic!("{out:?}")
        };
        assert_eq!(profiles.len(), 1);
        assert!(keyframes.is_empty(), "no keyframe built yet");
    }

    #[test]
    fn set_is_submitted_and_acked_with_the_frame_then_lines_go_on() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut out = Vec::new();
        s.on_bytes(
            b"{\"op\":\"hello\",\"framing\":\"length\"}\n{\"op\":\"set\",\"id\":9,\"values\":{\"Controls.Gear\":1,\"Controls.Flaps\":0.5}}\n{\"op\":\"ping\",\"id\":1}\n",
            t0,
            &mut out,
        );
        assert_eq!(out[0], Action::EnterV2(Framing::Length));
        let Some(Action::Submit(batch)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(batch.len(), 2, "applied together");
        assert!(s.is_waiting());
        out.clear();
        s.applied(
            Some(Applied {
                frame: 77,
                results: vec![Ok(()), Ok(())],
                relayed: false,
            }),
            false,
            t0,
            &mut out,
        );
        let bodies: Vec<serde_json::Value> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => {
                    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                    assert_eq!(len, bytes.len() - 4, "length-prefixed");
                    Some(serde_json::from_slice(&bytes[4..]).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            bodies[0],
            serde_json::json!({"op":"ack","id":9,"ok":true,"frame":77})
        );
        assert_eq!(bodies[1]["op"], "pong", "the ping waited for the set");
    }

    #[test]
    fn heartbeats_follow_silence_and_silence_from_the_client_ends_it() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut out = Vec::new();
        s.on_bytes(b"{\"op\":\"hello\"}\n", t0, &mut out);
        out.clear();
        let t1 = s.deadline().unwrap();
        assert_eq!(t1, t0 + Duration::from_secs(1));
        s.set_clock(Clock {
            wall_us: 1,
            seq: 42,
            last_sent: t0,
        });
        s.on_timeout(t1, &mut out);
        assert_eq!(sent(&out)[0], serde_json::json!({"op":"hb","seq":42,"t":1}));
        out.clear();
        // Data went out meanwhile: no heartbeat, the next check waits for a second of silence.
        let t2 = s.deadline().unwrap();
        s.set_clock(Clock {
            wall_us: 2,
            seq: 43,
            last_sent: t2 - Duration::from_millis(100),
        });
        s.on_timeout(t2, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(s.deadline().unwrap(), t2 + Duration::from_millis(900));
        s.on_timeout(t0 + Duration::from_secs(90), &mut out);
        assert_eq!(sent(&out)[0]["code"], "idle_timeout");
        assert!(matches!(
            out.last(),
            Some(Action::Close {
                reason: Disconnect::IdleTimeout,
                frame: None
            })
        ));
        assert!(s.is_closed());
    }
}
