//! aerobridge: a thread-per-core fan-out server for Aerofly FS4 Bridge telemetry.
//!
//! The data path, left to right:
//!
//! ```text
//! source ──> telemetry ──> packet ──> fanout::hub ──> fanout::worker ──> fanout::queue ──> net
//! (sim,      (JSON once    (TCP +     (tick thread:    (compio runtime   (per client,      (sockets)
//!  relay…)    per tick)     WS Bytes)  one message      thread, owns      bounded, latest
//!                                      per worker)      its clients)      wins)
//! commands: net ──> command (parse + validate) ──> hub ──> source   (reply ──> the client's queue)
//! ```
//!
//! Protocol v2 clients receive [`profile`] messages instead of the full frame: the tick builds one
//! keyframe or delta per profile due, framed once per transport, from the frame's own bytes. Each
//! packet and message is also compressed once (permessage-deflate, [`ws::deflate`]): on its own,
//! and against the previous one of its stream. The queue hands each client the variant its
//! window can decode.
//!
//! Where to start reading: [`manual`] for the design decisions, then [`fanout::hub`] (the tick),
//! [`fanout::queue`] (the slow-consumer policy), and [`net`] (the thin I/O layer).
//!
//! # Layers
//! Each module imports only from the layers below it, never back up (checked by
//! `scripts/check_module_cycles.py`, in CI):
//!
//! ```text
//! main, server          wiring: builds the App, binds listeners, starts workers and the tick
//!   net                 sockets: acceptors, the per-connection tasks (data, commands, websocket)
//!     app               the application context: config, the command channel, the counters
//!       metrics         /metrics and /healthz, rendered from the counters it is given
//!       record          `aerobridge record`
//!       session         per-connection protocol logic without I/O: upgrade, WebSocket, command
//!                       port (bytes and time in, actions out; net carries them out)
//!         config        CLI + env -> Config
//!           fanout      hub (the tick; owns the source), worker (clients; handler injected),
//!                       queue (slow-consumer policy), stats
//!             source    sim, relay, replay
//!               profile protocol v2's profiles: the registry, and the tick's keyframes/deltas
//!                 access, packet, command, ws, telemetry, runtime, log_limit, dashboard,
//!                 nats (feed URLs, credentials, counters, which origin an edge follows),
//!                 counters (single-writer counters and histograms)
//! ```
//!
//! [`session`], [`profile`], [`telemetry`], [`packet`], [`command`], [`ws`], [`access`],
//! [`fanout::queue`], [`nats`] and [`log_limit`] perform no I/O and know nothing of compio; they
//! are unit-tested with plain bytes and fuzzed (`fuzz/`). Sockets are opened in [`net`] (clients),
//! [`source::relay`] and [`record`] (upstream bridges), async-nats in [`net::nats`] (an origin)
//! and [`source::nats`] (an edge), each on its own side thread, and [`server`] (binding the listeners; waking the acceptors at
//! shutdown). [`fanout::worker`] owns clients and their queues but never a socket: the connection
//! handler ([`net::handle`]) is injected by [`server`], and the application context ([`app::App`])
//! rides along as a type parameter it never looks into.

#![warn(missing_docs)]
// One audited exception: `runtime::cap_io_wq` (a syscall compio does not wrap).
#![deny(unsafe_code)]

pub mod access;
pub mod app;
pub mod command;
pub mod config;
pub mod counters;
pub mod dashboard;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod log_limit;
pub mod manual;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod packet;
pub mod profile;
pub mod record;
pub mod runtime;
pub mod server;
pub mod session;
pub mod source;
pub mod telemetry;
pub mod ws;
