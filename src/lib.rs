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
//! Where to start reading: [`manual`] for the design decisions, then [`fanout::hub`] (the tick),
//! [`fanout::queue`] (the slow-consumer policy), and [`net`] (the thin I/O layer).
//!
//! Around that core: [`source`] (built-in model, relay, replay), [`record`] (`aerobridge record`),
//! [`access`] (token, read-only, rate limit, Origin policy), [`metrics`] and [`dashboard`] (plain
//! HTTP on the WebSocket port), [`config`] (CLI and env), [`server`] (start and stop).
//!
//! The modules [`telemetry`], [`packet`], [`command`], [`ws`], [`access`] and [`fanout::queue`]
//! perform no I/O and know nothing of compio; they are unit-tested with plain bytes and fuzzed
//! (`fuzz/`). [`net`] and
//! [`fanout::worker`] are the only places that touch sockets.

#![warn(missing_docs)]
// One audited exception: `runtime::cap_io_wq` (a syscall compio does not wrap).
#![deny(unsafe_code)]

pub mod access;
pub mod command;
pub mod config;
pub mod dashboard;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod log_limit;
pub mod manual;
pub mod metrics;
pub mod net;
pub mod packet;
pub mod record;
pub mod runtime;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod ws;
