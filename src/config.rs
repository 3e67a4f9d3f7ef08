//! Command line and environment → one validated [`Config`]. Every flag has an environment
//! variable; upstream's three (`AEROFLY_BRIDGE_BROADCAST_MS`, `AEROFLY_BRIDGE_WS_PORT`,
//! `AEROFLY_BRIDGE_WS_ENABLE`) keep their names so existing launch scripts work unchanged.

use crate::access::AccessPolicy;
use crate::command::ParseLimits;
use crate::fanout::queue::QueueLimits;
use crate::session::v2::V2Settings;
use crate::session::Settings;

pub use crate::session::v2::V2Limits;
use clap::builder::TypedValueParser as _;
use clap::Parser;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

/// For a parse error about an invalid value that came from an environment variable rather than
/// the command line: a line naming the variable (clap's message names only the option).
pub fn env_source_of(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // `--max-clients <MAX_CLIENTS>` → `max-clients`
    let long = arg.trim_start_matches('-').split([' ', '=']).next()?;
    let command = Cli::command();
    let option = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?;
    let var = option.get_env()?.to_str()?;
    let on_command_line =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let value = std::env::var(var).ok()?;
    (!on_command_line).then(|| format!("(the value comes from the environment: {var}={value})"))
}

/// `--nats-publish URL` with `--feed NAME`: `nats://HOST:PORT` or a bare `HOST:PORT` (as NATS
/// clients take it); the feed is never part of the URL.
fn publish_url(url: &str, feed: &str) -> Result<(String, String), ConfigError> {
    let given = url.trim_end_matches('/');
    let with_scheme = if given.contains("://") {
        given.to_string()
    } else {
        format!("nats://{given}")
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') {
        return Err(ConfigError(format!(
            "--nats-publish {given:?}: the URL names the server only (nats://HOST:PORT); the feed is --feed (now {feed:?})"
        )));
    }
    crate::nats::parse_url(&format!("{with_scheme}/{feed}")).map_err(|e| {
        ConfigError(format!(
            "--nats-publish {given:?} with --feed {feed:?}: expected nats://HOST:PORT (or HOST:PORT) and a feed of letters, digits, - and _ ({e})"
        ))
    })
}

/// `--max-clients-per-ip` when not given (loopback peers exempt then).
pub const DEFAULT_MAX_CLIENTS_PER_IP: usize = 1000;

/// aerobridge: streams Aerofly FS4 Bridge telemetry to many clients at once over TCP and
/// WebSocket, and carries their commands back.
///
/// With no simulator at hand the built-in flight model is the source, so running it without
/// arguments shows live data at once on 127.0.0.1 ports 12345 (TCP telemetry), 12346 (TCP
/// commands) and 8765 (WebSocket).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "aerobridge",
    version,
    about,
    long_about,
    max_term_width = 100,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Another mode instead of serving telemetry.
    #[command(subcommand)]
    pub mode: Option<Mode>,

    /// Address to listen on. Loopback by default: any other address exposes telemetry and
    /// commands to the network.
    #[arg(long, env = "AEROBRIDGE_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// TCP telemetry port (one JSON frame per line). 0 picks a free port.
    #[arg(long, env = "AEROBRIDGE_DATA_PORT", default_value_t = 12345)]
    pub data_port: u16,

    /// TCP command port (one JSON command per line, one reply line each). 0 picks a free port.
    #[arg(long, env = "AEROBRIDGE_COMMAND_PORT", default_value_t = 12346)]
    pub command_port: u16,

    /// WebSocket port (telemetry as text messages; commands as text messages). 0 picks a free port.
    #[arg(long, env = "AEROFLY_BRIDGE_WS_PORT", default_value_t = 8765)]
    pub ws_port: u16,

    /// Enable the WebSocket listener (1/0, true/false, on/off).
    #[arg(long, env = "AEROFLY_BRIDGE_WS_ENABLE", default_value = "1", value_parser = parse_switch, action = clap::ArgAction::Set, value_name = "0|1")]
    pub ws_enable: bool,

    /// Disable the WebSocket listener (same as --ws-enable 0).
    #[arg(long, env = "AEROBRIDGE_NO_WS")]
    pub no_ws: bool,

    /// Broadcast period in milliseconds, 5..=1000 (50 Hz = 20).
    #[arg(long, env = "AEROFLY_BRIDGE_BROADCAST_MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=1000))]
    pub broadcast_ms: u64,

    /// Worker threads (compio runtimes), each owning a share of the clients. Default: available cores.
    #[arg(long, env = "AEROBRIDGE_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// Most connections in total (telemetry and command). Beyond it new connections are refused
    /// politely (WebSocket: HTTP 503) and existing clients are untouched.
    #[arg(long, env = "AEROBRIDGE_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Most connections from one address (telemetry and command), so one host cannot take every
    /// slot; beyond it new connections from that address are refused politely (WebSocket: HTTP
    /// 429). By default 1000, and loopback peers (this machine's own processes, load generators
    /// included) count against --max-clients only; set explicitly, the limit applies to every
    /// address, loopback included. 0: no per-address limit.
    #[arg(long, env = "AEROBRIDGE_MAX_CLIENTS_PER_IP")]
    pub max_clients_per_ip: Option<usize>,

    /// New connections taken on per second, all workers together, spread over the ticks: each
    /// worker admits its share right after a tick's frames went to its established clients, and
    /// the rest wait for the next tick (in the listen backlog). Established clients go first.
    #[arg(long, env = "AEROBRIDGE_ADMISSION_RATE", default_value_t = 10_000)]
    pub admission_rate: u32,

    /// A client whose oldest unsent frame is older than this is disconnected as a slow consumer
    /// (WebSocket: Close 4000). Examples: 2s, 500ms.
    #[arg(long, env = "AEROBRIDGE_MAX_LAG", default_value = "2s", value_parser = parse_duration)]
    pub max_lag: Duration,

    /// Most telemetry frames waiting in one client's queue; past it, all but the newest are skipped.
    #[arg(long, env = "AEROBRIDGE_QUEUE_FRAMES", default_value_t = QueueLimits::DEFAULT.max_frames as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub queue_frames: u64,

    /// Most telemetry bytes waiting in one client's queue.
    #[arg(long, env = "AEROBRIDGE_QUEUE_BYTES", default_value_t = QueueLimits::DEFAULT.max_bytes)]
    pub queue_bytes: usize,

    /// Kernel send buffer per client socket (SO_SNDBUF): `auto` (a few frames, from the size of
    /// the first frame), a size in bytes, or 0 for the system default (autotuned up to
    /// tcp_wmem's maximum, megabytes per stalled client). Bounds the kernel memory a stalled
    /// client can pin; the queue policy cannot reach data already in the kernel.
    #[arg(long, env = "AEROBRIDGE_SEND_BUFFER", default_value = "auto", value_parser = parse_send_buffer)]
    pub send_buffer: SendBuffer,

    /// Largest WebSocket message a client may send, in bytes (larger: Close 1009).
    #[arg(long, env = "AEROBRIDGE_WS_MAX_MESSAGE", default_value_t = 64 << 10)]
    pub ws_max_message: usize,

    /// Longest command line in bytes (longer: an error reply, the line is skipped).
    #[arg(long, env = "AEROBRIDGE_COMMAND_MAX_LINE", default_value_t = 64 << 10)]
    pub command_max_line: usize,

    /// Most commands in one JSON array.
    #[arg(long, env = "AEROBRIDGE_COMMAND_MAX_BATCH", default_value_t = crate::command::ParseLimits::DEFAULT.max_batch)]
    pub command_max_batch: usize,

    /// Time a WebSocket client has to complete its upgrade request.
    #[arg(long, env = "AEROBRIDGE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Ping a WebSocket client after this long without hearing from it.
    #[arg(long, env = "AEROBRIDGE_WS_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// Disconnect a WebSocket client that stays silent this long after a ping.
    #[arg(long, env = "AEROBRIDGE_WS_PING_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ws_ping_timeout: Duration,

    /// Listen backlog for each port.
    #[arg(long, env = "AEROBRIDGE_BACKLOG", default_value_t = 1024)]
    pub backlog: u32,

    /// permessage-deflate on WebSocket: `shared` (each tick compressed once on its own and once
    /// against the previous frame, for everyone), `standalone` (on its own only), or `off`.
    #[arg(long, env = "AEROBRIDGE_WS_COMPRESSION", default_value_t = crate::ws::deflate::Mode::Shared,
        value_parser = clap::builder::PossibleValuesParser::new(<crate::ws::deflate::Mode as strum::VariantNames>::VARIANTS)
            .try_map(|s| s.parse::<crate::ws::deflate::Mode>()))]
    pub ws_compression: crate::ws::deflate::Mode,

    /// Protocol v2: most subscriptions one connection may hold (more: `too_many_subscriptions`).
    #[arg(long, env = "AEROBRIDGE_V2_MAX_SUBSCRIPTIONS", default_value_t = 16)]
    pub v2_max_subscriptions: usize,

    /// Protocol v2: most distinct profiles (variable set, rate, mode) server-wide; each costs one
    /// encode per due tick (more: `too_many_profiles`).
    #[arg(long, env = "AEROBRIDGE_V2_MAX_PROFILES", default_value_t = 256)]
    pub v2_max_profiles: usize,

    /// Protocol v2: send a heartbeat to a connection that has been sent nothing this long.
    #[arg(long, env = "AEROBRIDGE_V2_HEARTBEAT", default_value = "1s", value_parser = parse_duration)]
    pub v2_heartbeat: Duration,

    /// Protocol v2: disconnect a connection that has sent nothing this long (`idle_timeout`).
    #[arg(long, env = "AEROBRIDGE_V2_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub v2_idle_timeout: Duration,

    /// Protocol v2: how long a session's subscriptions are kept after its connection ends, for
    /// `hello` with `resume`.
    #[arg(long, env = "AEROBRIDGE_V2_RESUME_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub v2_resume_window: Duration,

    /// How often totals are logged (at debug level).
    #[arg(long, env = "AEROBRIDGE_STATS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Where telemetry comes from: `sim` (the built-in flight model), `relay:tcp://HOST:PORT`
    /// (a running Aerofly bridge or another aerobridge), or `replay:FILE` (a recording).
    #[arg(long, env = "AEROBRIDGE_SOURCE", default_value = "sim")]
    pub source: String,

    /// Publish every frame to a NATS server (`nats://HOST:PORT`) as feed `--feed`, and answer
    /// commands requested on it: this instance becomes an origin for `--source nats://…` edges.
    #[arg(long, help_heading = "NATS", env = "AEROBRIDGE_NATS_PUBLISH")]
    pub nats_publish: Option<String>,

    /// With --nats-publish: run as one of several origins on the feed, exactly one of which
    /// publishes at a time. They elect it with a lease in a JetStream key-value bucket
    /// (`aerobridge-lease-FEED`; the NATS server must run JetStream: `nats-server -js`); when the
    /// active one dies, a standby takes over within about 1.5 s, and edges refuse frames from an
    /// old leader that wakes up. Only the active origin takes commands.
    #[arg(
        long,
        help_heading = "NATS",
        env = "AEROBRIDGE_STANDBY",
        requires = "nats_publish"
    )]
    pub standby: bool,

    /// The feed name for `--nats-publish` (subjects `aerobridge.FEED.frames`, `.commands`).
    #[arg(
        long,
        help_heading = "NATS",
        env = "AEROBRIDGE_FEED",
        default_value = "default"
    )]
    pub feed: String,

    /// NATS: a credentials file (user JWT and NKey seed), for `--nats-publish` and
    /// `--source nats://…`. A user and password or a token may also be given in the URL
    /// (`nats://USER:PASS@HOST:PORT`); credentials are never logged.
    #[arg(long, help_heading = "NATS", env = "AEROBRIDGE_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,

    /// NATS: an authentication token (prefer the environment variable: command lines are visible
    /// to every local user).
    #[arg(
        long,
        help_heading = "NATS",
        env = "AEROBRIDGE_NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,

    /// NATS: root certificates (PEM) to trust; requires TLS. A `tls://` URL requires TLS too.
    #[arg(long, help_heading = "NATS", env = "AEROBRIDGE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<std::path::PathBuf>,

    /// NATS: a client certificate (PEM), with `--nats-tls-key`; requires TLS.
    #[arg(
        long,
        help_heading = "NATS",
        env = "AEROBRIDGE_NATS_TLS_CERT",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<std::path::PathBuf>,

    /// NATS: the client certificate's private key (PEM).
    #[arg(
        long,
        help_heading = "NATS",
        env = "AEROBRIDGE_NATS_TLS_KEY",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<std::path::PathBuf>,

    /// PEM certificate chain (leaf first) for TLS. With --tls-key, the ports in --tls-ports speak
    /// TLS (wss://, https:// for the dashboard). Reloaded on SIGHUP and when the file changes.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for --tls-cert (PKCS#8, RSA or EC).
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// Which ports speak TLS once a certificate is given: any of ws, data, commands.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_PORTS",
        default_value = "ws"
    )]
    pub tls_ports: crate::tls::TlsPorts,

    /// Mutual TLS: PEM CA certificates; TLS clients must present a certificate one of them
    /// signed. A client certificate is read-only unless listed in --tls-allow-commands.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Mutual TLS: common names (CN) of the client certificates that may send commands
    /// (cockpit-1,cockpit-2); comma-separated or repeated. Every other certificate is read-only.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_ALLOW_COMMANDS",
        value_delimiter = ','
    )]
    pub tls_allow_commands: Vec<String>,

    /// Plaintext beside TLS: an extra plaintext listener for a service whose port speaks TLS,
    /// as SERVICE=PORT (ws=8764, data=12347, commands=12348); repeatable.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_PLAIN_PORT",
        value_delimiter = ','
    )]
    pub plain_port: Vec<crate::tls::PlainPort>,

    /// Share of each tick period a worker may spend on TLS handshakes (0.01..=1); the rest of a
    /// ClientHello flood waits, and streaming clients keep their frames.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_TLS_HANDSHAKE_SHARE",
        default_value_t = 0.25
    )]
    pub tls_handshake_share: f64,

    /// Kernel TLS: auto (probe the kernel once; without a TLS module, encrypt in user space) or off.
    #[arg(
        long,
        help_heading = "TLS",
        env = "AEROBRIDGE_KTLS",
        default_value = "auto"
    )]
    pub ktls: crate::tls::KtlsMode,

    /// With a relay source: where accepted commands go (default: the relay host, port 12346).
    #[arg(long, env = "AEROBRIDGE_RELAY_COMMANDS")]
    pub relay_commands: Option<String>,

    /// With a replay source: playback speed (2 = twice as fast).
    #[arg(long, env = "AEROBRIDGE_SPEED", default_value_t = 1.0)]
    pub speed: f64,

    /// With a replay source: start over at the end instead of going stale.
    #[arg(long = "loop", env = "AEROBRIDGE_LOOP")]
    pub looping: bool,

    /// Require this token for commands (TCP: a line {"auth":"TOKEN"}; WebSocket: an
    /// `Authorization: Bearer TOKEN` header or `?token=TOKEN`). Telemetry stays readable.
    #[arg(long, env = "AEROBRIDGE_COMMAND_TOKEN", hide_env_values = true)]
    pub command_token: Option<String>,

    /// Refuse every command (telemetry only).
    #[arg(long, env = "AEROBRIDGE_READ_ONLY")]
    pub read_only: bool,

    /// Browser origins allowed to open a WebSocket, besides same-origin and loopback pages
    /// (comma-separated; `*` allows any). Other browser origins get HTTP 403.
    #[arg(long, env = "AEROBRIDGE_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Commands per second per connection (bursts up to twice that). Beyond it commands are
    /// refused with an error; a connection that keeps flooding is disconnected.
    #[arg(long, env = "AEROBRIDGE_COMMAND_RATE_LIMIT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub command_rate_limit: u32,

    /// Log filter (tracing syntax, e.g. info, debug, aerobridge=trace). RUST_LOG also works.
    #[arg(long, env = "AEROBRIDGE_LOG", default_value = "info")]
    pub log: String,
}

/// Modes other than serving telemetry.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Mode {
    /// Record a bridge's telemetry stream to a file (NDJSON; zstd-compressed if FILE ends in .zst).
    Record(RecordArgs),
    /// A WebSocket echo server for conformance testing (Autobahn TestSuite): the very same
    /// listener, handshake, frame codec, queue and send path as the telemetry server, but text and
    /// binary messages are sent back instead of being commands.
    Echo(EchoArgs),
}

/// Options of `aerobridge record`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// The bridge to record, e.g. tcp://127.0.0.1:12345.
    #[arg(
        long,
        env = "AEROBRIDGE_RECORD_FROM",
        required_unless_present = "repair"
    )]
    pub from: Option<String>,
    /// Output file (`.zst`: zstd-compressed). Made durable every half second, so a crash
    /// loses at most that much.
    #[arg(
        long,
        env = "AEROBRIDGE_RECORD_OUT",
        required_unless_present = "repair"
    )]
    pub out: Option<std::path::PathBuf>,
    /// Stop after this long (default: until Ctrl-C). A source that goes away is reconnected
    /// (with backoff) until then, into the same file.
    #[arg(long, env = "AEROBRIDGE_RECORD_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Instead of recording: write the whole part of a torn recording IN (a crash while
    /// recording) to a clean file OUT.
    #[arg(long, num_args = 2, value_names = ["IN", "OUT"], conflicts_with_all = ["from", "out", "duration"])]
    pub repair: Option<Vec<std::path::PathBuf>>,
}

/// Where frames come from, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The built-in flight model.
    Sim,
    /// Relay `upstream` (HOST:PORT), forwarding commands to `commands` (HOST:PORT).
    Relay {
        /// Telemetry port of the upstream bridge.
        upstream: String,
        /// Its command port.
        commands: String,
    },
    /// An edge of a NATS feed.
    Nats {
        /// `nats://HOST:PORT`.
        server: String,
        /// The feed name.
        feed: String,
    },
    /// Replay a recording.
    Replay {
        /// The file.
        path: std::path::PathBuf,
        /// Speed factor.
        speed: f64,
        /// Loop at the end.
        looping: bool,
    },
}

impl Cli {
    /// Parses `--source` and its companions.
    pub fn source_spec(&self) -> Result<SourceSpec, ConfigError> {
        let err = |m: String| ConfigError(m);
        match self.source.as_str() {
            "sim" => Ok(SourceSpec::Sim),
            s if s.starts_with("relay:") => {
                let upstream = crate::source::relay::parse_tcp_url(&s["relay:".len()..])
                    .map_err(|e| err(format!("--source: {e}")))?;
                let commands = match &self.relay_commands {
                    Some(url) => crate::source::relay::parse_tcp_url(url)
                        .map_err(|e| err(format!("--relay-commands: {e}")))?,
                    None => format!(
                        "{}:12346",
                        upstream
                            .rsplit_once(':')
                            .map(|(h, _)| h)
                            .unwrap_or("127.0.0.1")
                    ),
                };
                Ok(SourceSpec::Relay { upstream, commands })
            }
            s if s.starts_with("nats://") || s.starts_with("tls://") => {
                let (server, feed) = crate::nats::parse_url(s)
                    .map_err(|e| err(format!("--source: {e}")))?;
                Ok(SourceSpec::Nats { server, feed })
            }
            s if s.starts_with("replay:") => {
                if !(self.speed.is_finite() && self.speed > 0.0) {
                    return Err(err(format!(
                        "--speed must be a positive number, got {}",
                        self.speed
                    )));
                }
                Ok(SourceSpec::Replay {
                    path: s["replay:".len()..].into(),
                    speed: self.speed,
                    looping: self.looping,
                })
            }
            other => Err(err(format!(
                "--source {:?}: expected sim, relay:tcp://HOST:PORT, nats://HOST:PORT/FEED or replay:FILE",
                crate::nats::redact(other)
            ))),
        }
    }
}

/// Options of `aerobridge echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// Port to listen on.
    #[arg(long, env = "AEROBRIDGE_ECHO_PORT", default_value_t = 9001)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "AEROBRIDGE_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Largest message accepted (Autobahn sends up to 16 MiB).
    #[arg(long, env = "AEROBRIDGE_ECHO_WS_MAX_MESSAGE", default_value_t = 64 << 20)]
    pub ws_max_message: usize,
    /// Worker threads. Default: available cores.
    #[arg(long, env = "AEROBRIDGE_WORKERS")]
    pub workers: Option<NonZeroUsize>,
    /// Log filter.
    #[arg(long, env = "AEROBRIDGE_LOG", default_value = "info")]
    pub log: String,
}

impl EchoArgs {
    /// The configuration of an echo server.
    pub fn into_config(self) -> Config {
        let mut c = Config::default();
        c.echo = true;
        c.bind = self.bind;
        c.ws_port = Some(self.port);
        c.ws_max_message = self.ws_max_message;
        c.workers = self.workers.map(NonZeroUsize::get).unwrap_or(c.workers);
        // Echoes travel as control items (never skipped), so the queue must hold the largest.
        c.queue.max_control_bytes = self
            .ws_max_message
            .saturating_mul(2)
            .saturating_add(1 << 20);
        c.ws_ping_interval = Duration::from_secs(600);
        c
    }
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: IpAddr,
    /// TCP telemetry port.
    pub data_port: u16,
    /// TCP command port.
    pub command_port: u16,
    /// WebSocket port, `None` when disabled.
    pub ws_port: Option<u16>,
    /// Broadcast period.
    pub broadcast: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Connection limit.
    pub max_clients: usize,
    /// Connection limit per peer address (0: none).
    pub max_clients_per_ip: usize,
    /// Whether loopback peers count against it (only when it was set explicitly).
    pub per_ip_counts_loopback: bool,
    /// New connections per second (`--admission-rate`).
    pub admission_rate: u32,
    /// Per-client queue bounds and lag limit.
    pub queue: QueueLimits,
    /// SO_SNDBUF per client.
    pub send_buffer: SendBuffer,
    /// Largest client WebSocket message.
    pub ws_max_message: usize,
    /// Longest command line.
    pub command_max_line: usize,
    /// Most commands per array.
    pub command_max_batch: usize,
    /// Upgrade deadline.
    pub handshake_timeout: Duration,
    /// Idle time before a server ping.
    pub ws_ping_interval: Duration,
    /// Silence after a ping before disconnecting.
    pub ws_ping_timeout: Duration,
    /// Listen backlog.
    pub backlog: u32,
    /// Protocol v2 limits and timers.
    pub v2: V2Limits,
    /// NATS: publishing (an origin) and the link's credentials and TLS (origin and edge).
    pub nats: NatsConfig,
    /// permessage-deflate mode.
    pub ws_compression: crate::ws::deflate::Mode,
    /// TLS (`--tls-cert`), when given.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Plaintext listeners beside TLS ones (`--plain-port`).
    pub plain_ports: Vec<crate::tls::PlainPort>,
    /// Stats log period.
    pub stats_interval: Duration,
    /// How long a closing connection may take to flush what it owes (frame in flight, Close).
    pub close_grace: Duration,
    /// Who may send commands.
    pub access: AccessPolicy,
    /// Echo mode (`aerobridge echo`): WebSocket only, messages echoed.
    pub echo: bool,
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    /// The documented defaults, from the clap attributes alone: environment variables are
    /// ignored here (they are configuration, and only `main` reads configuration).
    fn default() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["aerobridge"])
            .expect("defaults parse");
        Cli::from_arg_matches(&matches)
            .expect("defaults parse")
            .into_config()
            .expect("defaults are valid")
    }
}

impl Cli {
    /// Validates the options.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        let ws_port = (self.ws_enable && !self.no_ws).then_some(self.ws_port);
        let mut ports = vec![
            ("--data-port", self.data_port),
            ("--command-port", self.command_port),
        ];
        if let Some(p) = ws_port {
            ports.push(("--ws-port", p));
        }
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if pa == pb && *pa != 0 {
                    return err(format!(
                        "{a} and {b} are both {pa}; each listener needs its own port"
                    ));
                }
            }
        }
        if self.max_clients == 0 {
            return err("--max-clients must be at least 1".into());
        }
        if self.max_lag < Duration::from_millis(self.broadcast_ms) {
            return err(format!(
                "--max-lag ({:?}) must be at least one broadcast period ({} ms)",
                self.max_lag, self.broadcast_ms
            ));
        }
        if self.queue_bytes < 1024 {
            return err("--queue-bytes must be at least 1024".into());
        }
        if !(125..=64 << 20).contains(&self.ws_max_message) {
            return err("--ws-max-message must be between 125 bytes and 64 MiB".into());
        }
        if !(64..=16 << 20).contains(&self.command_max_line) {
            return err("--command-max-line must be between 64 bytes and 16 MiB".into());
        }
        if self.command_max_batch == 0 {
            return err("--command-max-batch must be at least 1".into());
        }
        for (name, d) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--ws-ping-interval", self.ws_ping_interval),
            ("--ws-ping-timeout", self.ws_ping_timeout),
            ("--v2-heartbeat", self.v2_heartbeat),
            ("--v2-idle-timeout", self.v2_idle_timeout),
            ("--stats-interval", self.stats_interval),
        ] {
            if d.is_zero() {
                return err(format!("{name} must be greater than zero"));
            }
        }
        if !(0.01..=1.0).contains(&self.tls_handshake_share) {
            return err("--tls-handshake-share must be between 0.01 and 1".into());
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                ports: self.tls_ports,
                allow_commands: self
                    .tls_allow_commands
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                handshake_share: self.tls_handshake_share,
                ktls: self.ktls,
            }),
            _ => None,
        };
        if tls.is_none() && !self.plain_port.is_empty() {
            return err(
                "--plain-port adds a plaintext port beside a TLS one: it needs --tls-cert".into(),
            );
        }
        for p in &self.plain_port {
            let is_tls = tls.as_ref().is_some_and(|t| p.service.is_in(t.ports));
            if !is_tls {
                return err(format!(
                    "--plain-port {}={}: that service's own port is already plaintext (add it to --tls-ports)",
                    p.service.as_str(),
                    p.port
                ));
            }
            if p.port != 0 && ports.iter().any(|(_, q)| *q == p.port) {
                return err(format!(
                    "--plain-port {}: port {} is taken by another listener",
                    p.service.as_str(),
                    p.port
                ));
            }
        }
        let workers = self.workers.map(NonZeroUsize::get).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(1)
        });
        Ok(Config {
            bind: self.bind,
            data_port: self.data_port,
            command_port: self.command_port,
            ws_port,
            broadcast: Duration::from_millis(self.broadcast_ms),
            workers,
            max_clients: self.max_clients,
            max_clients_per_ip: self
                .max_clients_per_ip
                .unwrap_or(DEFAULT_MAX_CLIENTS_PER_IP),
            per_ip_counts_loopback: self.max_clients_per_ip.is_some(),
            admission_rate: self.admission_rate.max(1),
            queue: QueueLimits {
                max_frames: self.queue_frames as usize,
                max_bytes: self.queue_bytes,
                max_control_bytes: (self.command_max_line * 2).max(256 << 10),
                max_lag: self.max_lag,
            },
            send_buffer: self.send_buffer,
            ws_max_message: self.ws_max_message,
            command_max_line: self.command_max_line,
            command_max_batch: self.command_max_batch,
            handshake_timeout: self.handshake_timeout,
            ws_ping_interval: self.ws_ping_interval,
            ws_ping_timeout: self.ws_ping_timeout,
            backlog: self.backlog.max(1),
            ws_compression: self.ws_compression,
            tls,
            plain_ports: self.plain_port.clone(),
            nats: NatsConfig {
                publish: match &self.nats_publish {
                    None => None,
                    Some(url) => Some(publish_url(url, &self.feed)?),
                },
                standby: self.standby,
                security: crate::nats::Security {
                    creds: self.nats_creds.clone(),
                    token: self.nats_token.clone(),
                    tls_ca: self.nats_tls_ca.clone(),
                    tls_client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
                },
            },
            v2: V2Limits {
                max_subscriptions: self.v2_max_subscriptions.max(1),
                max_profiles: self.v2_max_profiles.max(1),
                heartbeat: self.v2_heartbeat,
                idle_timeout: self.v2_idle_timeout,
                resume_window: self.v2_resume_window,
            },
            stats_interval: self.stats_interval,
            close_grace: Duration::from_millis(1000),
            access: AccessPolicy {
                token: self.command_token.filter(|t| !t.is_empty()),
                read_only: self.read_only,
                rate_per_second: self.command_rate_limit,
                allowed_origins: self
                    .allowed_origin
                    .into_iter()
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
                certificate_read_only: false,
            },
            echo: false,
        })
    }
}

/// NATS: what an origin publishes, and how either end reaches the server.
#[derive(Clone, Debug, Default)]
pub struct NatsConfig {
    /// `--nats-publish`: (server URL, feed).
    pub publish: Option<(String, String)>,
    /// `--standby`: elect the publishing origin with a JetStream lease.
    pub standby: bool,
    /// Credentials and TLS (origin and edge).
    pub security: crate::nats::Security,
}

/// Session ids from the operating system's random generator (the core draws none itself).
#[derive(Debug)]
pub struct OsRandomIds;

impl crate::session::v2::SessionIds for OsRandomIds {
    fn next_id(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: still unique (time and a counter), if guessable.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            bytes[..8].copy_from_slice(&t.to_be_bytes());
            bytes[8..].copy_from_slice(&n.to_be_bytes());
        }
        bytes
    }
}

impl Config {
    /// What sessions need of this configuration (the core's plain settings struct).
    pub fn session_settings(&self) -> Settings {
        Settings {
            access: self.access.clone(),
            command_max_line: self.command_max_line,
            parse: ParseLimits {
                max_batch: self.command_max_batch,
            },
            ws_max_message: self.ws_max_message,
            ping_interval: self.ws_ping_interval,
            ping_timeout: self.ws_ping_timeout,
            handshake_timeout: self.handshake_timeout,
            echo: self.echo,
            v2: V2Settings::new(
                self.v2,
                1.0 / self.broadcast.as_secs_f64(),
                std::sync::Arc::new(OsRandomIds),
            ),
            compression: self.ws_compression,
            ..Settings::default()
        }
    }
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!(
            "expected 1 or 0 (true/false, on/off), got {other:?}"
        )),
    }
}

/// How big each client socket's kernel send buffer is (`--send-buffer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendBuffer {
    /// [`SendBuffer::AUTO_FRAMES`] frames of the size the source produces, clamped to
    /// [`SendBuffer::AUTO_MIN`]..=[`SendBuffer::AUTO_MAX`].
    Auto,
    /// Leave SO_SNDBUF alone (the kernel autotunes it up to `tcp_wmem`'s maximum).
    System,
    /// This many bytes (the kernel doubles it for its own bookkeeping).
    Bytes(usize),
}

impl SendBuffer {
    /// Frames of kernel buffer per client in `auto`: enough to keep a LAN link busy between
    /// writer wake-ups; the per-client queue holds the rest, where latest-wins applies.
    pub const AUTO_FRAMES: usize = 3;
    /// Smallest `auto` size.
    pub const AUTO_MIN: usize = 16 << 10;
    /// Largest `auto` size.
    pub const AUTO_MAX: usize = 256 << 10;

    /// The SO_SNDBUF value to set for frames of `frame_bytes`, or `None` to leave it alone.
    pub fn resolve(self, frame_bytes: usize) -> Option<usize> {
        match self {
            SendBuffer::Auto => Some(
                (frame_bytes * Self::AUTO_FRAMES)
                    .clamp(Self::AUTO_MIN, Self::AUTO_MAX)
                    .next_multiple_of(4096),
            ),
            SendBuffer::System => None,
            SendBuffer::Bytes(n) => Some(n),
        }
    }
}

/// Parses `--send-buffer`: `auto`, `0` (system default) or a size in bytes.
pub fn parse_send_buffer(s: &str) -> Result<SendBuffer, String> {
    match s.trim() {
        "auto" => Ok(SendBuffer::Auto),
        "0" => Ok(SendBuffer::System),
        n => n
            .parse::<usize>()
            .map(SendBuffer::Bytes)
            .map_err(|_| format!("`{s}` is not `auto`, 0 or a size in bytes")),
    }
}

/// `250ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{s:?} needs a unit: ms, s or m (e.g. {s}s)"));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration like 2s, 500ms or 1m 30s, got {s:?} ({e})"))?;
    if d > Duration::from_secs(86_400) {
        return Err(format!("duration {s:?} is out of range (at most 24h)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held while a test changes the process environment.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn parse(args: &[&str]) -> Result<Config, String> {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let mut full = vec!["aerobridge"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_cores_default_settings_are_the_clis() {
        // `Settings::default()` (tests, fuzzing) must say what the documented flags say.
        let cli = Config::default().session_settings();
        let core = Settings::default();
        assert_eq!(
            format!("{:?}", cli.access),
            format!("{:?}", core.access),
            "access"
        );
        assert_eq!(
            (
                cli.command_max_line,
                cli.parse,
                cli.ws_max_message,
                cli.ping_interval,
                cli.ping_timeout,
                cli.handshake_timeout,
                cli.echo,
                cli.compression,
                cli.respond_within,
            ),
            (
                core.command_max_line,
                core.parse,
                core.ws_max_message,
                core.ping_interval,
                core.ping_timeout,
                core.handshake_timeout,
                core.echo,
                core.compression,
                core.respond_within,
            )
        );
        assert_eq!(cli.v2.limits, core.v2.limits);
        assert_eq!(cli.v2.rate_hz, core.v2.rate_hz);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_upstreams() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.data_port, c.command_port, c.ws_port),
            (12345, 12346, Some(8765))
        );
        assert_eq!(c.broadcast, Duration::from_millis(20));
        assert!(c.bind.is_loopback());
        assert_eq!(c.max_clients, 10_000);
        assert_eq!(c.queue.max_lag, Duration::from_secs(2));
        assert!(c.backlog >= 1024);
    }

    #[test]
    fn config_default_is_the_documented_defaults_whatever_the_environment() {
        // Set a variable that would change the result if clap read the environment; the lock
        // keeps this module's other tests (which parse with the environment) from seeing it.
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("AEROBRIDGE_MAX_CLIENTS", "7");
        let c = Config::default();
        std::env::remove_var("AEROBRIDGE_MAX_CLIENTS");
        assert_eq!(c.max_clients, 10_000);
        // One source for each default: the queue's and parser's constants.
        assert_eq!(c.queue.max_frames, QueueLimits::DEFAULT.max_frames);
        assert_eq!(c.queue.max_bytes, QueueLimits::DEFAULT.max_bytes);
        assert_eq!(c.queue.max_lag, QueueLimits::DEFAULT.max_lag);
        assert_eq!(
            c.command_max_batch,
            crate::command::ParseLimits::DEFAULT.max_batch
        );
    }

    #[test]
    fn broadcast_range_and_clear_errors() {
        assert!(parse(&["--broadcast-ms", "5"]).is_ok());
        assert!(parse(&["--broadcast-ms", "1000"]).is_ok());
        let e = parse(&["--broadcast-ms", "4"]).unwrap_err();
        assert!(e.contains("5..=1000"), "{e}");
        assert!(parse(&["--broadcast-ms", "1001"]).is_err());
        assert!(parse(&["--broadcast-ms", "fast"]).is_err());
        let e = parse(&["--data-port", "9000", "--ws-port", "9000"]).unwrap_err();
        assert!(e.contains("--data-port and --ws-port are both 9000"), "{e}");
        assert!(parse(&["--max-lag", "2"])
            .unwrap_err()
            .contains("needs a unit"));
    }

    #[test]
    fn ws_switches() {
        assert_eq!(parse(&["--no-ws"]).unwrap().ws_port, None);
        assert_eq!(parse(&["--ws-enable", "0"]).unwrap().ws_port, None);
        assert_eq!(parse(&["--ws-enable", "off"]).unwrap().ws_port, None);
        assert!(parse(&["--ws-enable", "maybe"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s 500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("25h").unwrap_err().contains("out of range"));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("2 fortnights")
            .unwrap_err()
            .contains("like 2s, 500ms"));
    }
}
