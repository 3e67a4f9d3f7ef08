//! Commands from one connection: parsing, the gate (token, read-only, rate limit), the batch
//! handed to the tick, and one outcome per request in the order they came — whichever transport
//! brought them.

use super::{Action, Applied, Settings};
use crate::access::CommandGate;
use crate::command::{
    parse_line, write_auth_ok, write_error, write_ok, write_relayed_ok, Command, CommandError,
    Line, LineSplitter, Rejection, Request,
};
use std::time::Instant;

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; shows from frame `.1` on.
    Applied(Command, u64),
    /// Delivered to the upstream bridge (relay source).
    Relayed(Command),
    /// `{"auth": …}` accepted.
    Authenticated(Option<Box<str>>),
    /// Refused.
    Rejected(Rejection),
}

impl Outcome {
    /// The client's `id`, if it sent one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Outcome::Applied(c, _) | Outcome::Relayed(c) => c.id.as_deref(),
            Outcome::Authenticated(id) => id.as_deref(),
            Outcome::Rejected(r) => r.id.as_deref(),
        }
    }

    /// Appends the reply line.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        match self {
            Outcome::Applied(c, frame) => write_ok(out, c, *frame),
            Outcome::Relayed(c) => write_relayed_ok(out, c),
            Outcome::Authenticated(id) => write_auth_ok(out, id.as_deref()),
            Outcome::Rejected(r) => write_error(out, r),
        }
    }
}

/// Parses one split line into `out`; a line past the limit is refused with the limit named.
pub fn parse_into(settings: &Settings, line: Line<'_>, out: &mut Vec<Result<Request, Rejection>>) {
    match line {
        Line::Text(text) => parse_line(text, settings.parse, out),
        Line::TooLong => out.push(Err(Rejection::bare(CommandError::LineTooLong {
            limit: settings.command_max_line,
        }))),
    }
}

/// Parses a whole message (a WebSocket text message): every line, the last one even without `\n`.
pub fn parse_message(settings: &Settings, text: &[u8]) -> Vec<Result<Request, Rejection>> {
    let mut splitter = LineSplitter::new(settings.command_max_line);
    splitter.extend(text);
    let mut parsed = Vec::new();
    while let Some(line) = splitter.next_line() {
        parse_into(settings, line, &mut parsed);
    }
    if let Some(line) = splitter.finish() {
        parse_into(settings, line, &mut parsed);
    }
    parsed
}

/// One connection's commands: its gate, and the batch waiting for the tick.
#[derive(Debug)]
pub struct Commands {
    gate: CommandGate,
    /// Outcomes in request order; `None` marks a command waiting for the tick.
    waiting: Option<(Vec<Option<Outcome>>, Vec<Command>)>,
}

impl Commands {
    /// A new connection's commands; `presented` is a token it brought along (WebSocket header or
    /// query).
    pub fn new(settings: &Settings, presented: Option<&str>) -> Self {
        Self {
            gate: CommandGate::new(&settings.access, presented),
            waiting: None,
        }
    }

    /// Whether a batch is with the tick.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Gates `parsed` in order. Returns the commands to submit (then call
    /// [`applied`](Self::applied) with the tick's answer), or `None` when nothing needs the tick
    /// (then call [`applied`](Self::applied) with `None` at once).
    pub fn gate(
        &mut self,
        settings: &Settings,
        parsed: Vec<Result<Request, Rejection>>,
        now: Instant,
    ) -> Option<Vec<Command>> {
        let policy = &settings.access;
        let mut outcomes = Vec::with_capacity(parsed.len());
        let mut batch = Vec::new();
        for p in parsed {
            outcomes.push(match p {
                Ok(Request::Auth { token, id }) => {
                    Some(match self.gate.authenticate(policy, &token) {
                        Ok(()) => Outcome::Authenticated(id),
                        Err(error) => Outcome::Rejected(Rejection {
                            error,
                            variable: None,
                            id,
                        }),
                    })
                }
                Ok(Request::Command(cmd)) => match self.gate.admit(policy, now) {
                    Ok(()) => {
                        batch.push(cmd);
                        None
                    }
                    Err(error) => Some(Outcome::Rejected(Rejection {
                        error,
                        variable: Some(cmd.name.name.into()),
                        id: cmd.id,
                    })),
                },
                Err(r) => Some(Outcome::Rejected(r)),
            });
        }
        let submit = (!batch.is_empty()).then(|| batch.clone());
        self.waiting = Some((outcomes, batch));
        submit
    }

    /// Completes the batch from [`gate`](Self::gate): every outcome in request order. `None`
    /// (nothing submitted, or the tick never answered) refuses the waiting commands as busy —
    /// or as unavailable when `stopping`.
    pub fn applied(&mut self, result: Option<Applied>, stopping: bool) -> Vec<Outcome> {
        let Some((outcomes, batch)) = self.waiting.take() else {
            return Vec::new();
        };
        let (frame, results, relayed) = match result {
            Some(a) => (a.frame, a.results, a.relayed),
            None => (0, Vec::new(), false),
        };
        let mut results = results.into_iter();
        let mut batch = batch.into_iter();
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    let cmd = batch.next().expect("one waiting command per gap");
                    let error = match results.next() {
                        Some(Ok(())) if relayed => return Outcome::Relayed(cmd),
                        Some(Ok(())) => return Outcome::Applied(cmd, frame),
                        Some(Err(e)) => e,
                        None if stopping => CommandError::Unavailable("server shutting down"),
                        None => CommandError::Busy,
                    };
                    Outcome::Rejected(Rejection {
                        error,
                        variable: Some(cmd.name.name.into()),
                        id: cmd.id,
                    })
                })
            })
            .collect()
    }

    /// Admits one request that is not a v1 command line (a v2 `set`): token, read-only mode and
    /// rate limit, exactly as for each v1 command.
    pub fn admit(&mut self, settings: &Settings, now: Instant) -> Result<(), CommandError> {
        self.gate.admit(&settings.access, now)
    }

    /// Whether the connection keeps flooding past the rate limit (drop it).
    pub fn is_flooding(&self) -> bool {
        self.gate.is_flooding()
    }
}

/// The [`Action::Tally`] of `outcomes`.
pub fn tally(outcomes: &[Outcome]) -> Action {
    let rejected: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Rejected(r) => Some(r.error.reason()),
            _ => None,
        })
        .collect();
    Action::Tally {
        accepted: (outcomes.len() - rejected.len()) as u64,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::session::test_settings(false)
    }

    #[test]
    fn outcomes_keep_request_order_around_the_batch() {
        let s = settings();
        let mut c = Commands::new(&s, None);
        let parsed = parse_message(
            &s,
            br#"{"variable":"Controls.Gear","value":1,"id":1}
{"variable":"Nope","value":1,"id":2}
{"variable":"Controls.Flaps","value":0.5,"id":3}"#,
        );
        let batch = c.gate(&s, parsed, Instant::now()).expect("two to submit");
        assert_eq!(batch.len(), 2);
        assert!(c.is_waiting());
        let out = c.applied(
            Some(Applied {
                frame: 7,
                results: vec![Ok(()), Err(CommandError::Busy)],
                relayed: false,
            }),
            false,
        );
        let ids: Vec<_> = out.iter().map(|o| o.id().unwrap().to_string()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert!(matches!(out[0], Outcome::Applied(_, 7)));
        assert!(
            matches!(&out[1], Outcome::Rejected(r) if r.error.reason().as_str() == "unknown_variable")
        );
        assert!(matches!(&out[2], Outcome::Rejected(r) if r.error == CommandError::Busy));
        assert!(!c.is_waiting());
    }

    #[test]
    fn relayed_commands_say_delivered_not_a_frame() {
        let s = settings();
        let mut c = Commands::new(&s, None);
        let parsed = parse_message(&s, br#"{"variable":"Controls.Gear","value":1,"id":9}"#);
        assert!(c.gate(&s, parsed, Instant::now()).is_some());
        let out = c.applied(
            Some(Applied {
                frame: 4,
                results: vec![Ok(())],
                relayed: true,
            }),
            false,
        );
        assert!(matches!(out[0], Outcome::Relayed(_)));
        let mut reply = Vec::new();
        out[0].write_reply(&mut reply);
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(
            (v["ok"].as_bool(), v["relayed"].as_bool()),
            (Some(true), Some(true))
        );
        assert!(v.get("frame").is_none(), "{v}");
    }

    #[test]
    fn a_batch_the_tick_never_saw_is_busy_or_unavailable_when_stopping() {
        let s = settings();
        for (stopping, want) in [
            (false, CommandError::Busy),
            (true, CommandError::Unavailable("server shutting down")),
        ] {
            let mut c = Commands::new(&s, None);
            let parsed = parse_message(&s, br#"{"variable":"Controls.Gear","value":1}"#);
            assert!(c.gate(&s, parsed, Instant::now()).is_some());
            let out = c.applied(None, stopping);
            assert!(matches!(&out[0], Outcome::Rejected(r) if r.error == want));
        }
    }

    #[test]
    fn tokens_gate_commands_and_tally_counts_by_reason() {
        let mut s = settings();
        s.access.token = Some("secret".into());
        let mut c = Commands::new(&s, None);
        let parsed = parse_message(
            &s,
            b"{\"variable\":\"Controls.Gear\",\"value\":1}\n{\"auth\":\"secret\"}\n{\"variable\":\"Controls.Gear\",\"value\":1}",
        );
        let batch = c.gate(&s, parsed, Instant::now()).unwrap();
        assert_eq!(batch.len(), 1, "only the command after the token");
        let out = c.applied(
            Some(Applied {
                frame: 3,
                results: vec![Ok(())],
                relayed: false,
            }),
            false,
        );
        assert!(
            matches!(&out[0], Outcome::Rejected(r) if r.error.reason().as_str() == "unauthorized")
        );
        assert!(matches!(out[1], Outcome::Authenticated(_)));
        assert!(matches!(out[2], Outcome::Applied(_, 3)));
        assert_eq!(
            tally(&out),
            Action::Tally {
                accepted: 2,
                rejected: vec![crate::command::Reason::Unauthorized]
            }
        );
    }
}
