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
//! # Two crates
//! Every protocol decision lives in **`aerobridge-proto`** (`proto/`), which performs no I/O,
//! starts no runtime, reads no clock and draws no randomness: the WebSocket codec, sessions,
//! commands, access rules, telemetry, packets, profiles, the send queue, the NATS feed rules and
//! the flight model. This crate is the shell that feeds it bytes, `now` and ids and carries out
//! its [`session::Action`]s. The core's modules are re-exported here under their old names
//! ([`ws`], [`session`], [`command`], [`access`], [`telemetry`], [`packet`], [`profile`],
//! [`log_limit`], and [`fanout::queue`]), so the shell reads `crate::ws::…` as before.
//!
//! ```text
//! aerobridge-proto   no I/O: ws, telemetry, packet, profile, queue, command, access, session,
//!                    feed, sim, disconnect, log_limit        (its own map: proto/src/lib.rs)
//! aerobridge (this)  the shell: config (clap), runtime, net, fanout, sources with I/O, metrics
//! aerobridge-client  clients/rust: the v1 reader and v2 session client (loadtest and tests use it)
//! loadtest, harness  the load generator and the test harness, over real sockets
//! ```
//!
//! # Layers
//! Each module of the shell imports only from the layers below it, never back up (checked by
//! `scripts/check_module_cycles.py`, in CI):
//!
//! ```text
//! main, server          wiring: builds the App, binds listeners, starts workers and the tick
//!   net                 sockets: acceptors, the per-connection tasks (data, commands, websocket)
//!     app               the application context: config, the command channel, the counters
//!       metrics         /metrics and /healthz, rendered from the counters it is given
//!       record          `aerobridge record`
//!         config        CLI + env -> Config (and the core's session Settings)
//!           fanout      hub (the tick; owns the source), worker (clients; handler injected),
//!                       stats
//!             source    sim (the core's model as a Source), relay, replay, nats (an edge),
//!                       recording (the crash-safe file format record writes, replay reads)
//!               runtime, dashboard, nats (feed URLs, credentials, link counters),
//!               counters (single-writer counters and histograms)
//! ```
//!
//! Sockets are opened in [`net`] (clients), [`source::relay`] and [`record`] (upstream
//! bridges), async-nats in [`net::nats`] (an origin) and [`source::nats`] (an edge), each on its
//! own side thread, and [`server`] (binding the listeners; waking the acceptors at shutdown).
//! [`fanout::worker`] owns clients and their queues but never a socket: the connection handler
//! ([`net::handle`]) is injected by [`server`], and the application context ([`app::App`]) rides
//! along as a type parameter it never looks into.

#![warn(missing_docs)]
// Audited exceptions: `runtime::cap_io_wq` and `tls::ktls_probe` (syscalls nobody wraps).
#![deny(unsafe_code)]

pub mod app;
pub mod config;
pub mod counters;
pub mod dashboard;
pub mod fanout;
pub mod manual;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod record;
pub mod runtime;
pub mod server;
pub mod source;
pub mod tls;

// The protocol core (its own crate, no I/O), re-exported under the names the shell has always
// used, so `crate::ws::…` reads the same in net/ as it does in the core.
pub use aerobridge_proto::{
    access, command, fuzzing, log_limit, packet, profile, session, telemetry, ws,
};
