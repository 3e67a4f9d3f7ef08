//! Session protocol v2 (`docs/protocol-v2.md`) on the client's side, without I/O: requests, and
//! the state rebuilt from what the server sends. A keyframe carries every subscribed value; a
//! delta carries what differs from the keyframe it names (`base`), never from the previous
//! delta, so any single delta rebuilds the state as long as its keyframe came (the server sends
//! the keyframe first to a client that lacks it).

use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::collections::{HashMap, VecDeque};

/// One variable's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number (SDK units).
    Num(f64),
    /// A string.
    Text(String),
    /// `null` (a non-finite number upstream).
    Null,
}

impl Value {
    /// The value of a JSON value.
    pub fn of(v: &BorrowedValue<'_>) -> Value {
        if let Some(s) = v.as_str() {
            Value::Text(s.to_string())
        } else if let Some(x) = v.cast_f64() {
            Value::Num(x)
        } else {
            Value::Null
        }
    }
}

/// Keyframes kept per profile for deltas that name an older one (a delta's keyframe is at
/// most a second old; the server sends it again first when a client lacks it).
const KEYS_KEPT: usize = 4;

/// One subscription's rebuilt state.
#[derive(Debug, Default)]
pub struct Profile {
    /// The subscribed names, in wire order (a data message's positions index this list).
    pub names: Vec<String>,
    /// `every`: the subscription gets frames whose `update_counter` is a multiple of it.
    pub every: u64,
    /// The state after the last data message.
    pub values: Vec<Value>,
    /// The last data message's `seq`.
    pub seq: Option<u64>,
    keys: VecDeque<(u64, Vec<Value>)>,
}

/// What one server message meant.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// `welcome`: the session id (for `resume`) and whether a resume took.
    Welcome {
        /// The session id.
        session: String,
        /// `resumed`, when the hello asked to resume.
        resumed: Option<bool>,
    },
    /// A `sub` was acknowledged: its profile's names are known now.
    Subscribed {
        /// The request's `id`, as sent back (rendered JSON).
        id: Option<String>,
        /// The subscription id.
        sub: u64,
        /// The profile id data messages carry in `p`.
        profile: u64,
        /// `every`.
        every: u64,
    },
    /// Any other `ack`: of a `set` (`ok`, and `frame` when applied) or an `unsub`.
    Ack {
        /// The request's `id` (rendered JSON).
        id: Option<String>,
        /// Applied.
        ok: bool,
        /// The first frame that shows it.
        frame: Option<u64>,
        /// Why not: the error's code and message.
        error: Option<(String, String)>,
    },
    /// A keyframe or delta: the profile's state is rebuilt.
    Data {
        /// The profile id.
        profile: u64,
        /// Its `seq` (the v1 `update_counter` it reflects).
        seq: u64,
        /// The build time (µs since the UNIX epoch).
        t: u64,
        /// `valid`.
        valid: bool,
        /// A keyframe.
        key: bool,
        /// Positions (into the profile's names) that changed: a keyframe's are all of them.
        changed: Vec<usize>,
    },
    /// A delta whose keyframe never came: the state could not be rebuilt.
    BrokenChain {
        /// The profile id.
        profile: u64,
        /// The delta's seq.
        seq: u64,
        /// The keyframe it named.
        base: u64,
    },
    /// `error`: a request was refused, or the connection is being closed.
    Error {
        /// The request's `id`, if any.
        id: Option<String>,
        /// The error code (`bad_request`, `idle_timeout`, …).
        code: String,
        /// The server's words.
        message: String,
    },
    /// `hb`, `pong`, `catalog`, an unknown op: nothing to rebuild.
    Other(String),
    /// A v1 frame (before the switch to v2 on a TCP connection).
    V1Frame,
}

/// A message that is not what the protocol says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// A v2 connection's subscriptions and their rebuilt states.
#[derive(Debug, Default)]
pub struct V2State {
    /// Every acknowledged subscription's profile, by profile id.
    pub profiles: HashMap<u64, Profile>,
}

fn id_of(v: &BorrowedValue<'_>) -> Option<String> {
    v.get("id").map(|id| id.encode())
}

impl V2State {
    /// Handles one server message (JSON text; parsed in place).
    pub fn on_message(&mut self, text: &mut [u8]) -> Result<Event, ProtocolError> {
        let bad = |what: &str| ProtocolError(what.to_string());
        let v = simd_json::to_borrowed_value(text).map_err(|_| bad("not JSON"))?;
        let Some(op) = v.get("op").and_then(|o| o.as_str()) else {
            return match v.get("schema") {
                Some(_) => Ok(Event::V1Frame),
                None => Err(bad("no op")),
            };
        };
        let u64_of = |key: &str| v.get(key).and_then(|x| x.as_u64());
        match op {
            "welcome" => Ok(Event::Welcome {
                session: v
                    .get("session")
                    .and_then(|s| s.as_str())
                    .ok_or_else(|| bad("welcome without session"))?
                    .to_string(),
                resumed: v.get("resumed").and_then(|r| r.as_bool()),
            }),
            "ack" if v.get("vars").is_some() => {
                let names: Vec<String> = v
                    .get("vars")
                    .and_then(|n| n.as_array())
                    .ok_or_else(|| bad("ack vars is not a list"))?
                    .iter()
                    .map(|n| n.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("ack vars are not names"))?;
                let profile = u64_of("profile").ok_or_else(|| bad("ack without profile"))?;
                let every = u64_of("every").unwrap_or(1).max(1);
                let p = self.profiles.entry(profile).or_default();
                if p.names != names {
                    *p = Profile {
                        values: vec![Value::Null; names.len()],
                        names,
                        ..Profile::default()
                    };
                }
                p.every = every;
                Ok(Event::Subscribed {
                    id: id_of(&v),
                    sub: u64_of("sub").unwrap_or(0),
                    profile,
                    every,
                })
            }
            "ack" => {
                let error = v.get("error").map(|e| {
                    let field =
                        |k: &str| e.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    (field("code"), field("message"))
                });
                Ok(Event::Ack {
                    id: id_of(&v),
                    ok: v.get("ok").and_then(|o| o.as_bool()) == Some(true),
                    frame: u64_of("frame"),
                    error,
                })
            }
            "key" | "delta" => self.on_data(&v, op == "key"),
            "error" => {
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                Ok(Event::Error {
                    id: id_of(&v),
                    code: field("code"),
                    message: field("message"),
                })
            }
            other => Ok(Event::Other(other.to_string())),
        }
    }

    fn on_data(&mut self, v: &BorrowedValue<'_>, key: bool) -> Result<Event, ProtocolError> {
        let bad = |what: &str| ProtocolError(what.to_string());
        let u64_of = |k: &str| v.get(k).and_then(|x| x.as_u64());
        let profile = u64_of("p").ok_or_else(|| bad("data without p"))?;
        let seq = u64_of("seq").ok_or_else(|| bad("data without seq"))?;
        let t = u64_of("t").unwrap_or(0);
        let valid = v
            .get("valid")
            .and_then(|x| x.cast_f64())
            .is_none_or(|x| x != 0.0);
        let p = self
            .profiles
            .get_mut(&profile)
            .ok_or_else(|| bad("data for a profile never acknowledged"))?;
        let changed = if key {
            let values: Vec<Value> = v
                .get("v")
                .and_then(|a| a.as_array())
                .ok_or_else(|| bad("keyframe without v"))?
                .iter()
                .map(Value::of)
                .collect();
            if values.len() != p.names.len() {
                return Err(bad("keyframe of another length than the ack's names"));
            }
            if p.keys.len() == KEYS_KEPT {
                p.keys.pop_front();
            }
            p.keys.push_back((seq, values.clone()));
            p.values = values;
            (0..p.names.len()).collect()
        } else {
            let base = u64_of("base").ok_or_else(|| bad("delta without base"))?;
            let Some((_, base_values)) = p.keys.iter().find(|(s, _)| *s == base) else {
                return Ok(Event::BrokenChain { profile, seq, base });
            };
            let mut values = base_values.clone();
            let mut changed = Vec::new();
            for c in v
                .get("c")
                .and_then(|c| c.as_array())
                .ok_or_else(|| bad("delta without c"))?
            {
                let pos = c
                    .get_idx(0)
                    .and_then(|x| x.as_usize())
                    .filter(|&pos| pos < values.len())
                    .ok_or_else(|| bad("a change at no position"))?;
                values[pos] = c.get_idx(1).map_or(Value::Null, Value::of);
                changed.push(pos);
            }
            p.values = values;
            changed
        };
        p.seq = Some(seq);
        Ok(Event::Data {
            profile,
            seq,
            t,
            valid,
            key,
            changed,
        })
    }
}

/// `{"op":"hello","protocol":2,…}`: `client` names the client in `/connections`; `resume` a
/// session to take over; `length` asks for length-prefixed framing (TCP).
pub fn hello(client: &str, resume: Option<&str>, length: bool) -> String {
    let mut out = format!(
        "{{\"op\":\"hello\",\"protocol\":2,\"client\":{}",
        json_string(client)
    );
    if let Some(r) = resume {
        out.push_str(&format!(",\"resume\":{}", json_string(r)));
    }
    if length {
        out.push_str(",\"framing\":\"length\"");
    }
    out.push('}');
    out
}

/// `{"op":"sub",…}` for `vars` (empty: every variable) at `hz` (None: every frame), `delta`
/// or full mode.
pub fn sub(id: u64, vars: &[&str], hz: Option<f64>, delta: bool) -> String {
    let mut out = format!(
        "{{\"op\":\"sub\",\"id\":{id},\"mode\":\"{}\"",
        if delta { "delta" } else { "full" }
    );
    if !vars.is_empty() {
        let names: Vec<String> = vars.iter().map(|v| json_string(v)).collect();
        out.push_str(&format!(",\"vars\":[{}]", names.join(",")));
    }
    if let Some(hz) = hz {
        out.push_str(&format!(",\"hz\":{hz}"));
    }
    out.push('}');
    out
}

/// `{"op":"set","id":…,"values":{…}}`: applied together or not at all.
pub fn set(id: u64, values: &[(&str, f64)]) -> String {
    let values: Vec<String> = values
        .iter()
        .map(|(n, v)| format!("{}:{v}", json_string(n)))
        .collect();
    format!(
        "{{\"op\":\"set\",\"id\":{id},\"values\":{{{}}}}}",
        values.join(",")
    )
}

/// `{"op":"hb"}`: tells the server the client is there (send one at least every 30 s).
pub const HEARTBEAT: &str = "{\"op\":\"hb\"}";

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    aerobridge_proto::telemetry::encoder::write_json_string(&mut out, s);
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &mut V2State, msg: &str) -> Event {
        s.on_message(&mut msg.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn keyframes_and_deltas_rebuild_the_state_and_a_missing_base_is_said() {
        let mut s = V2State::default();
        assert_eq!(
            feed(&mut s, r#"{"op":"welcome","session":"abc","protocol":2}"#),
            Event::Welcome {
                session: "abc".into(),
                resumed: None
            }
        );
        assert!(matches!(
            feed(
                &mut s,
                r#"{"op":"ack","id":1,"ok":true,"sub":1,"profile":3,"every":5,"vars":["A","B","C"]}"#
            ),
            Event::Subscribed {
                profile: 3,
                every: 5,
                ..
            }
        ));
        feed(
            &mut s,
            r#"{"op":"key","p":3,"seq":10,"t":1,"valid":1,"v":[1.5,"x",null]}"#,
        );
        let e = feed(
            &mut s,
            r#"{"op":"delta","p":3,"seq":15,"base":10,"t":2,"valid":1,"c":[[0,2.5]]}"#,
        );
        assert!(
            matches!(e, Event::Data { seq: 15, key: false, ref changed, .. } if changed == &[0])
        );
        let p = &s.profiles[&3];
        assert_eq!(
            p.values,
            [Value::Num(2.5), Value::Text("x".into()), Value::Null]
        );
        // Deltas are against the keyframe, not the previous delta.
        feed(
            &mut s,
            r#"{"op":"delta","p":3,"seq":20,"base":10,"t":3,"valid":1,"c":[[1,"y"]]}"#,
        );
        assert_eq!(
            s.profiles[&3].values,
            [Value::Num(1.5), Value::Text("y".into()), Value::Null]
        );
        assert_eq!(
            feed(
                &mut s,
                r#"{"op":"delta","p":3,"seq":25,"base":7,"t":4,"valid":1,"c":[]}"#
            ),
            Event::BrokenChain {
                profile: 3,
                seq: 25,
                base: 7
            }
        );
        assert!(matches!(
            feed(&mut s, r#"{"op":"ack","id":9,"ok":false,"error":{"code":"read_only","message":"no"}}"#),
            Event::Ack { ok: false, error: Some((ref c, _)), .. } if c == "read_only"
        ));
        assert_eq!(
            feed(&mut s, r#"{"schema":"aerofly-bridge-telemetry"}"#),
            Event::V1Frame
        );
    }

    #[test]
    fn requests_are_json() {
        for r in [
            hello("t\"x", Some("s1"), true),
            sub(1, &["Aircraft.Altitude", "Controls.*"], Some(10.0), true),
            sub(2, &[], None, false),
            set(3, &[("Controls.Flaps", 0.5)]),
        ] {
            let mut b = r.clone().into_bytes();
            assert!(simd_json::to_borrowed_value(&mut b).is_ok(), "{r}");
        }
    }
}
