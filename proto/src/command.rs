//! Commands: parse (simd-json), validate against upstream's command names, render replies.
//!
//! Wire format, identical on the TCP command port and in WebSocket text messages: one JSON value
//! per line, either `{"variable": NAME, "value": NUMBER}` or an array of such objects. An optional
//! `"id"` (string or number) is echoed in the reply. Every command gets exactly one reply line:
//! `{"ok":true,"variable":…,"value":…,"frame":N}` (N: the `update_counter` of the first frame
//! that shows it) or `{"ok":false,"variable":…,"error":"<reason>"}`.

use crate::telemetry::encoder::{write_json_string, write_number};
use crate::telemetry::table::{command_name, variable_id, CommandName};
use simd_json::prelude::*;
use std::f64::consts::TAU;

/// A command that passed validation.
#[derive(Debug, Clone)]
pub struct Command {
    /// The name the client used (its table entry; `target` is what it sets).
    pub name: &'static CommandName,
    /// The value, finite and within the name's range.
    pub value: f64,
    /// The client's `id`, rendered as JSON, echoed in the reply.
    pub id: Option<Box<str>>,
}

impl PartialEq for Command {
    /// The same table entry (by address: names are `'static`), value and id.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.name, other.name) && self.value == other.value && self.id == other.id
    }
}

/// One thing a command line can ask for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Set a variable.
    Command(Command),
    /// `{"auth": "TOKEN"}`: authenticate this connection for commands (`--command-token`).
    Auth {
        /// The presented token (never logged).
        token: Box<str>,
        /// The client's `id`, rendered as JSON.
        id: Option<Box<str>>,
    },
}

/// Why a command was refused. Each variant's text is the reply's `error`; its [`Reason`] is the
/// metric label.
#[derive(Debug, Clone, PartialEq, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(Reason),
    doc = "A [`CommandError`] without its details: the `reason` label of the rejection metrics.",
    derive(strum::IntoStaticStr, strum::EnumIter, strum::EnumCount),
    strum(serialize_all = "snake_case")
)]
pub enum CommandError {
    /// The line is not JSON.
    #[strum_discriminants(strum(serialize = "malformed_json"))]
    Malformed(String),
    /// The line is longer than the limit.
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not an object (or array of objects).
    NotAnObject,
    /// An empty array.
    EmptyBatch,
    /// More commands in one line than allowed.
    BatchTooLarge {
        /// The limit.
        limit: usize,
    },
    /// `variable` missing or not a string.
    MissingVariable,
    /// `value` missing or not a number.
    MissingValue,
    /// `value` is there but is not a number (the payload says what it is instead).
    ValueNotANumber(&'static str),
    /// A relay could not deliver the command to its upstream bridge (says which and why).
    UpstreamUnavailable(String),
    /// The upstream bridge answered the relayed command with a refusal (its words).
    UpstreamRefused(String),
    /// The number does not fit a double (e.g. `1e999`).
    NotFinite,
    /// No such name in upstream's command table or in telemetry.
    UnknownVariable(String),
    /// The name exists but may not be set.
    ReadOnly(String),
    /// Outside the name's documented range.
    OutOfRange {
        /// The offending value.
        value: f64,
        /// Lowest accepted.
        min: f64,
        /// Highest accepted.
        max: f64,
        /// Unit of the range.
        unit: &'static str,
    },
    /// Not a valid squawk (octal digits 0–7 only).
    InvalidTransponderCode,
    /// The server could not take the command right now.
    Busy,
    /// Commands are disabled (no source accepts them).
    Unavailable(&'static str),
    /// `--command-token` is set and this connection has not presented it (or presented another).
    Unauthorized {
        /// A token was presented but did not match.
        wrong_token: bool,
    },
    /// `--read-only`: no commands at all.
    ReadOnlyMode,
    /// Mutual TLS: this client certificate is not among `--tls-allow-commands`.
    CertificateNotAllowed,
    /// More commands per second than `--command-rate-limit` allows on one connection.
    RateLimited {
        /// The limit.
        per_second: u32,
    },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            CommandError::LineTooLong { limit } => write!(f, "line too long (limit {limit} bytes)"),
            CommandError::NotAnObject => {
                f.write_str(r#"expected {"variable": NAME, "value": NUMBER} or an array of them"#)
            }
            CommandError::EmptyBatch => f.write_str("empty command array"),
            CommandError::BatchTooLarge { limit } => {
                write!(f, "too many commands in one line (limit {limit})")
            }
            CommandError::MissingVariable => {
                f.write_str(r#""variable" must be a string naming the variable to set"#)
            }
            CommandError::MissingValue => f.write_str(r#""value" is missing: send a number"#),
            CommandError::ValueNotANumber(kind) => {
                write!(f, r#""value" must be a number, not {kind}"#)
            }
            CommandError::UpstreamUnavailable(why) => write!(f, "unavailable: {why}"),
            CommandError::UpstreamRefused(why) => write!(f, "upstream refused: {why}"),
            CommandError::NotFinite => f.write_str("value is not a finite number"),
            CommandError::UnknownVariable(n) => {
                write!(f, "unknown variable {n:?}")?;
                match crate::telemetry::table::did_you_mean(n) {
                    Some(meant) => write!(f, "; did you mean {meant:?}?"),
                    None => Ok(()),
                }
            }
            CommandError::ReadOnly(n) => write!(f, "{n} is read-only"),
            CommandError::OutOfRange {
                value,
                min,
                max,
                unit,
            } => {
                write!(f, "value {value} out of range [{min}, {max}]")?;
                if !unit.is_empty() && *unit != "none" {
                    write!(f, " {unit}")?;
                }
                Ok(())
            }
            CommandError::InvalidTransponderCode => {
                f.write_str("transponder code must have four octal digits (0000-7777)")
            }
            CommandError::Busy => f.write_str("server busy: command queue full, retry"),
            CommandError::Unavailable(why) => f.write_str(why),
            CommandError::Unauthorized { wrong_token: true } => f.write_str("unauthorized: wrong token"),
            CommandError::Unauthorized { wrong_token: false } => f.write_str(
                r#"unauthorized: this server requires a token for commands (TCP: send {"auth":"TOKEN"} first; WebSocket: Authorization: Bearer TOKEN or ?token=TOKEN)"#,
            ),
            CommandError::ReadOnlyMode => f.write_str("commands are disabled: the server runs with --read-only"),
            CommandError::CertificateNotAllowed => f.write_str("read-only: this client certificate may not send commands (the server lists who may in --tls-allow-commands)"),
            CommandError::RateLimited { per_second } => {
                write!(f, "rate limit: more than {per_second} commands per second on this connection")
            }
        }
    }
}

impl std::error::Error for CommandError {}

impl CommandError {
    /// The metric label, e.g. `unknown_variable`.
    pub fn reason(&self) -> Reason {
        Reason::from(self)
    }
}

impl Reason {
    /// The label, e.g. `unknown_variable`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A refused command with what the client said about it, for the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Why.
    pub error: CommandError,
    /// The `variable` the client sent, if any.
    pub variable: Option<Box<str>>,
    /// The client's `id`, rendered as JSON.
    pub id: Option<Box<str>>,
}

impl Rejection {
    /// A rejection with nothing to echo.
    pub fn bare(error: CommandError) -> Self {
        Self {
            error,
            variable: None,
            id: None,
        }
    }
}

/// Limits on what one line may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Most commands in one array.
    pub max_batch: usize,
}

impl ParseLimits {
    /// The defaults; `--command-max-batch` takes its default from here.
    pub const DEFAULT: ParseLimits = ParseLimits { max_batch: 64 };
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What is wrong with a line that is not JSON, in plain words (never the parser's internals).
fn describe_json_error(e: &simd_json::Error) -> String {
    crate::telemetry::decode::describe_json_error(
        e,
        r#"expected a JSON object such as {"variable": "Controls.Throttle", "value": 0.75}"#,
    )
}

/// Parses and validates one line (already split, without its `\n`; it is parsed in place).
/// Blank lines yield nothing; anything else yields one entry per command (at least one).
pub fn parse_line(line: &mut [u8], limits: ParseLimits, out: &mut Vec<Result<Request, Rejection>>) {
    let trimmed = trim(line);
    if trimmed.is_empty() {
        return;
    }
    let value = match simd_json::to_borrowed_value(trimmed) {
        Ok(v) => v,
        Err(e) => {
            out.push(Err(Rejection::bare(CommandError::Malformed(
                describe_json_error(&e),
            ))));
            return;
        }
    };
    if let Some(items) = value.as_array() {
        if items.is_empty() {
            out.push(Err(Rejection::bare(CommandError::EmptyBatch)));
        } else if items.len() > limits.max_batch {
            out.push(Err(Rejection::bare(CommandError::BatchTooLarge {
                limit: limits.max_batch,
            })));
        } else {
            out.extend(items.iter().map(validate));
        }
    } else {
        out.push(validate(&value));
    }
}

fn trim(line: &mut [u8]) -> &mut [u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &mut line[start..end]
}

fn validate(v: &simd_json::BorrowedValue<'_>) -> Result<Request, Rejection> {
    let Some(obj) = v.as_object() else {
        return Err(Rejection::bare(CommandError::NotAnObject));
    };
    let id = obj.get("id").and_then(render_id);
    if let (Some(token), None) = (
        obj.get("auth").and_then(|t| t.as_str()),
        obj.get("variable"),
    ) {
        return Ok(Request::Auth {
            token: token.into(),
            id,
        });
    }
    let variable = obj.get("variable").and_then(|v| v.as_str());
    let reject = |error| Rejection {
        error,
        variable: variable.map(Into::into),
        id: id.clone(),
    };
    let Some(name) = variable else {
        return Err(reject(CommandError::MissingVariable));
    };
    let mut cmd = check(name, obj.get("value")).map_err(reject)?;
    cmd.id = id.clone();
    Ok(Request::Command(cmd))
}

/// Validates setting `name` to `value` (a JSON value, `None` when absent): the name must be a
/// writable command name, the value a finite number within its range. The command has no `id`.
pub fn check(
    name: &str,
    value: Option<&simd_json::BorrowedValue<'_>>,
) -> Result<Command, CommandError> {
    let value = match value {
        Some(v) if v.is_number() => v.cast_f64().unwrap_or(f64::NAN),
        None => return Err(CommandError::MissingValue),
        Some(v) => {
            let kind = match v.value_type() {
                simd_json::ValueType::String => "a string",
                simd_json::ValueType::Bool => "true or false",
                simd_json::ValueType::Null => "null",
                simd_json::ValueType::Array => "an array",
                _ => "an object",
            };
            return Err(CommandError::ValueNotANumber(kind));
        }
    };
    if !value.is_finite() {
        return Err(CommandError::NotFinite);
    }
    let entry = match command_name(name) {
        Some(e) if e.access.is_writable() => e,
        Some(_) => return Err(CommandError::ReadOnly(name.to_string())),
        None if variable_id(name).is_some() => {
            return Err(CommandError::ReadOnly(name.to_string()))
        }
        None => return Err(CommandError::UnknownVariable(name.to_string())),
    };
    check_range(entry, value)?;
    Ok(Command {
        name: entry,
        value,
        id: None,
    })
}

fn render_id(v: &simd_json::BorrowedValue<'_>) -> Option<Box<str>> {
    let mut buf = Vec::new();
    if let Some(s) = v.as_str() {
        write_json_string(&mut buf, s);
    } else if let Some(i) = v.as_i64() {
        buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else if let Some(u) = v.as_u64() {
        buf.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
    } else if let Some(f) = v.cast_f64() {
        write_number(&mut buf, f);
    } else {
        return None;
    }
    String::from_utf8(buf).ok().map(String::into_boxed_str)
}

/// The accepted range of a writable name, in the SDK unit that goes on the wire (Hz, rad, m/s).
/// `None`: any finite number (view and simulation controls upstream does not document).
pub fn range_of(c: &CommandName) -> Option<(f64, f64, &'static str)> {
    let t = c.target;
    let r = |min: f64, max: f64, unit: &'static str| Some((min, max, unit));
    if t.ends_with("FrequencySwap") || matches!(c.flag, "event" | "toggle") && c.unit == "none" {
        return r(0.0, 1.0, "");
    }
    if t.starts_with("Communication.COM") && t.ends_with("Frequency") {
        return r(118.0e6, 137.0e6, "Hz");
    }
    if t.starts_with("Navigation.ILS") && t.ends_with("Frequency") {
        return r(108.1e6, 111.95e6, "Hz");
    }
    if t.starts_with("Navigation.NAV") && t.ends_with("Frequency") {
        return r(108.0e6, 118.0e6, "Hz");
    }
    if t.starts_with("Navigation.ADF") && t.ends_with("Frequency") {
        return r(190.0e3, 1750.0e3, "Hz");
    }
    if t.starts_with("Navigation.DME") {
        return match &t["Navigation.DMEx".len()..] {
            "Frequency" => r(960.0e6, 1215.0e6, "Hz"),
            "Distance" => r(0.0, 200.0, "NM"),
            "Time" => r(0.0, 5940.0, "s"),
            _ => r(0.0, 999.0, "m/s"),
        };
    }
    if c.unit == "rad" && (t.contains("Course") || t.contains("Heading")) && c.flag == "value" {
        return r(0.0, TAU, "rad");
    }
    match t {
        "Autopilot.SelectedAirspeed" | "Autopilot.SelectedSpeed" => r(0.0, 300.0, "m/s"),
        "Autopilot.SelectedAltitude" => r(-500.0, 20000.0, "m"),
        "Autopilot.SelectedVerticalSpeed" => r(-25.0, 25.0, "m/s"),
        "Communication.TransponderCode" => r(0.0, 7777.0, ""),
        "Communication.TransponderCursor" => r(0.0, 3.0, ""),
        "Controls.Magnetos1" | "Controls.FuelSelector" => r(0.0, 3.0, ""),
        "Simulation.Time" => r(0.0, 86400.0, "s"),
        "Pressurization.LandingElevation" | "Pressurization.LandingElevationManual" => {
            r(-500.0, 10000.0, "m")
        }
        _ if t.ends_with("Trim")
            || t.contains("Cyclic")
            || t.ends_with(".Input")
            || matches!(
                t,
                "Controls.NoseWheelSteering" | "Controls.TailRotor" | "Controls.Tiller"
            ) =>
        {
            r(-1.0, 1.0, "")
        }
        _ if t.starts_with("Controls.") || t.starts_with("Doors.") || t.starts_with("Windows.") => {
            r(0.0, 1.0, "")
        }
        _ => None,
    }
}

fn check_range(c: &CommandName, value: f64) -> Result<(), CommandError> {
    if let Some((min, max, unit)) = range_of(c) {
        if !(min..=max).contains(&value) {
            return Err(CommandError::OutOfRange {
                value,
                min,
                max,
                unit,
            });
        }
    }
    if c.target == "Communication.TransponderCode" {
        let code = value as u32;
        let octal = value.fract() == 0.0
            && [code / 1000, code / 100 % 10, code / 10 % 10, code % 10]
                .iter()
                .all(|d| *d <= 7);
        if !octal {
            return Err(CommandError::InvalidTransponderCode);
        }
    }
    Ok(())
}

/// Appends the reply line (with `\n`) for an applied command.
/// Appends the reply line (with `\n`) for a command a relay delivered to its upstream bridge:
/// `"relayed":true` instead of a `frame` (when the simulator shows it is upstream's business).
pub fn write_relayed_ok(out: &mut Vec<u8>, cmd: &Command) {
    write_ok_head(out, cmd);
    out.extend_from_slice(b",\"relayed\":true}\n");
}

/// `{"ok":true,"id":…,"variable":…,"value":…` (the reply is finished by the caller).
fn write_ok_head(out: &mut Vec<u8>, cmd: &Command) {
    out.extend_from_slice(b"{\"ok\":true");
    write_id(out, cmd.id.as_deref());
    out.extend_from_slice(b",\"variable\":");
    write_json_string(out, cmd.name.name);
    out.extend_from_slice(b",\"value\":");
    write_number(out, cmd.value);
}

/// Appends the reply line (with `\n`) for an applied command: `frame` is the first
/// `update_counter` that shows it.
pub fn write_ok(out: &mut Vec<u8>, cmd: &Command, frame: u64) {
    write_ok_head(out, cmd);
    out.extend_from_slice(b",\"frame\":");
    out.extend_from_slice(itoa::Buffer::new().format(frame).as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Appends the reply line (with `\n`) for a successful `{"auth": …}`.
pub fn write_auth_ok(out: &mut Vec<u8>, id: Option<&str>) {
    out.extend_from_slice(b"{\"ok\":true");
    write_id(out, id);
    out.extend_from_slice(b",\"auth\":true}\n");
}

/// Appends the reply line (with `\n`) for a refused command.
pub fn write_error(out: &mut Vec<u8>, rejection: &Rejection) {
    out.extend_from_slice(b"{\"ok\":false");
    write_id(out, rejection.id.as_deref());
    if let Some(v) = &rejection.variable {
        out.extend_from_slice(b",\"variable\":");
        write_json_string(out, v);
    }
    out.extend_from_slice(b",\"error\":");
    write_json_string(out, &rejection.error.to_string());
    out.extend_from_slice(b"}\n");
}

fn write_id(out: &mut Vec<u8>, id: Option<&str>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.as_bytes());
    }
}

/// Splits a byte stream into lines of bounded length without losing the last unterminated one.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    start: usize,
    max_line: usize,
    discarding: bool,
}

/// One line out of a [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line without its terminator.
    Text(&'a mut [u8]),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

impl LineSplitter {
    /// A splitter for lines of up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_line,
            discarding: false,
        }
    }

    /// The line limit.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        loop {
            let pending = &self.buf[self.start..];
            match memchr::memchr(b'\n', pending) {
                Some(nl) => {
                    let (s, e) = (self.start, self.start + nl);
                    self.start = e + 1;
                    if std::mem::take(&mut self.discarding) {
                        continue; // the tail of a line already reported as too long
                    }
                    if nl > self.max_line {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Text(&mut self.buf[s..e]));
                }
                None if pending.len() > self.max_line => {
                    let report = !self.discarding;
                    self.discarding = true;
                    self.start = self.buf.len();
                    return report.then_some(Line::TooLong);
                }
                None => return None,
            }
        }
    }

    /// Frees the buffer when nothing is pending (an idle connection keeps no allocation).
    pub fn shrink_if_empty(&mut self) {
        if self.start == self.buf.len() && !self.buf.is_empty()
            || self.buf.capacity() > 0 && self.buf.is_empty()
        {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// At end of input: the final line that had no `\n`, if any.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        let (s, e) = (self.start, self.buf.len());
        self.start = e;
        if s == e || std::mem::take(&mut self.discarding) {
            return None;
        }
        Some(Line::Text(&mut self.buf[s..e]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<Result<Command, Rejection>> {
        let mut out = Vec::new();
        parse_line(&mut s.as_bytes().to_vec(), ParseLimits::default(), &mut out);
        out.into_iter()
            .map(|r| match r {
                Ok(Request::Command(c)) => Ok(c),
                Ok(Request::Auth { .. }) => panic!("unexpected auth"),
                Err(e) => Err(e),
            })
            .collect()
    }

    #[test]
    fn auth_lines_are_recognised() {
        let mut out = Vec::new();
        parse_line(
            &mut br#"{"auth":"s3cret","id":1}"#.to_vec(),
            ParseLimits::default(),
            &mut out,
        );
        match out.pop().unwrap().unwrap() {
            Request::Auth { token, id } => {
                assert_eq!((&*token, id.as_deref()), ("s3cret", Some("1")))
            }
            other => panic!("{other:?}"),
        }
        let mut reply = Vec::new();
        write_auth_ok(&mut reply, Some("1"));
        assert_eq!(reply, b"{\"ok\":true,\"id\":1,\"auth\":true}\n");
    }

    fn error_of(s: &str) -> CommandError {
        parse(s).pop().unwrap().unwrap_err().error
    }

    #[test]
    fn accepts_writable_names_and_aliases() {
        let c = parse(r#"{"variable": "Controls.Throttle", "value": 0.75}"#)
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(c.name.name, "Controls.Throttle");
        assert_eq!(c.value, 0.75);
        let c = parse(r#" {"variable":"Controls.PropellerSpeed.1","value":1,"id":7} "#)
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(c.name.target, "Controls.PropellerSpeed1");
        assert_eq!(c.id.as_deref(), Some("7"));
        let c = parse(r#"{"variable":"Communication.COM1Frequency","value":121.5e6,"id":"a\"b"}"#)
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(c.id.as_deref(), Some(r#""a\"b""#));
        assert!(parse(r#"{"variable":"Communication.TransponderCode","value":7700}"#)[0].is_ok());
    }

    #[test]
    fn rejects_with_clear_reasons() {
        assert_eq!(
            error_of(r#"{"variable":"Nope.Nothing","value":1}"#),
            CommandError::UnknownVariable("Nope.Nothing".into())
        );
        assert_eq!(
            error_of(r#"{"variable":"Aircraft.Altitude","value":1}"#),
            CommandError::ReadOnly("Aircraft.Altitude".into())
        );
        // In telemetry but not a command name: read-only, not unknown.
        assert_eq!(
            error_of(r#"{"variable":"Controls.Yoke","value":1}"#),
            CommandError::ReadOnly("Controls.Yoke".into())
        );
        assert_eq!(
            error_of(r#"{"variable":"Controls.Throttle","value":"1"}"#),
            CommandError::ValueNotANumber("a string")
        );
        assert_eq!(
            error_of(r#"{"variable":"Controls.Throttle"}"#),
            CommandError::MissingValue
        );
        // The reply and the metric label name the same reason, in plain words.
        let e = error_of(r#"{"variable":"Controls.Throttle","value":"x"}"#);
        assert_eq!(e.reason().as_str(), "value_not_a_number");
        assert_eq!(e.to_string(), r#""value" must be a number, not a string"#);
        let nan = error_of(r#"{"variable":"Controls.Throttle","value":NaN}"#).to_string();
        assert_eq!(
            nan,
            "malformed JSON: NaN and Infinity are not JSON numbers; send a finite number (at byte 40, 'N')"
        );
        // simd-json refuses numbers that overflow a double outright.
        assert!(matches!(
            error_of(r#"{"variable":"Controls.Throttle","value":1e999}"#),
            CommandError::Malformed(_)
        ));
        assert_eq!(error_of(r#"{"value":1}"#), CommandError::MissingVariable);
        assert_eq!(error_of(r#"[1,2]"#), CommandError::NotAnObject);
        assert_eq!(error_of(r#"[]"#), CommandError::EmptyBatch);
        assert!(matches!(
            error_of(r#"{"variable":"#),
            CommandError::Malformed(_)
        ));
        assert!(matches!(
            error_of(r#"{"variable":"Controls.Throttle","value":1.5}"#),
            CommandError::OutOfRange { .. }
        ));
        assert!(matches!(
            error_of(r#"{"variable":"Communication.COM1Frequency","value":121.5}"#),
            CommandError::OutOfRange { .. }
        ));
        assert_eq!(
            error_of(r#"{"variable":"Communication.TransponderCode","value":7680}"#),
            CommandError::InvalidTransponderCode
        );
        let msg = error_of(r#"{"variable":"Controls.Throttle","value":-2}"#).to_string();
        assert_eq!(msg, "value -2 out of range [0, 1]");
    }

    #[test]
    fn arrays_yield_one_result_per_command_and_blank_lines_none() {
        let out = parse(
            r#"[{"variable":"Controls.Flaps","value":0.5},{"variable":"X","value":1},{"variable":"Controls.Gear","value":0}]"#,
        );
        assert_eq!(out.len(), 3);
        assert!(out[0].is_ok() && out[1].is_err() && out[2].is_ok());
        assert!(parse("   \r").is_empty());
    }

    #[test]
    fn replies_are_json_lines() {
        let c = parse(r#"{"variable":"Controls.Throttle","value":0.25,"id":"x"}"#)
            .pop()
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_ok(&mut out, &c, 99);
        assert_eq!(out, b"{\"ok\":true,\"id\":\"x\",\"variable\":\"Controls.Throttle\",\"value\":0.25,\"frame\":99}\n");
        out.clear();
        let r = parse(r#"{"variable":"Aircraft.Altitude","value":1,"id":3}"#)
            .pop()
            .unwrap()
            .unwrap_err();
        write_error(&mut out, &r);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["id"], 3);
        assert_eq!(v["variable"], "Aircraft.Altitude");
        assert_eq!(v["error"], "Aircraft.Altitude is read-only");
    }

    #[test]
    fn every_writable_name_accepts_its_range_bounds() {
        for c in crate::telemetry::table::COMMAND_NAMES
            .iter()
            .filter(|c| c.access.is_writable())
        {
            let (min, max) = range_of(c).map(|(a, b, _)| (a, b)).unwrap_or((-1.0, 1.0));
            for v in [min, max] {
                let v = if c.target == "Communication.TransponderCode" {
                    7777.0
                } else {
                    v
                };
                assert!(check_range(c, v).is_ok(), "{} {v}", c.name);
            }
        }
    }

    #[test]
    fn line_splitter() {
        let mut s = LineSplitter::new(8);
        s.extend(b"ab\ncd");
        assert_eq!(s.next_line(), Some(Line::Text(&mut b"ab".to_vec())));
        assert_eq!(s.next_line(), None);
        s.extend(b"e\n0123456789");
        assert_eq!(s.next_line(), Some(Line::Text(&mut b"cde".to_vec())));
        assert_eq!(s.next_line(), Some(Line::TooLong));
        assert_eq!(s.next_line(), None);
        s.extend(b"more\nok\nlast");
        assert_eq!(s.next_line(), Some(Line::Text(&mut b"ok".to_vec())));
        assert_eq!(s.next_line(), None);
        assert_eq!(s.finish(), Some(Line::Text(&mut b"last".to_vec())));
        assert_eq!(s.finish(), None);
        let mut s = LineSplitter::new(4);
        s.extend(b"0123456\n");
        assert_eq!(s.next_line(), Some(Line::TooLong));
        assert_eq!(s.next_line(), None);
    }
}
