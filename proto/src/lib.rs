//! aerobridge-proto: every protocol decision of aerobridge, and no I/O.
//!
//! In the style of `quinn-proto`: nothing here opens a socket, starts a runtime, reads a clock or
//! draws randomness. Sessions are fed the bytes a peer sent, the current time (`now`) and, where
//! they need them, ids the shell drew; they answer with [`session::Action`]s that the shell (the
//! `aerobridge` crate's `net`) carries out. The compiler keeps it that way: this crate's normal
//! dependencies name none of compio, tokio, async-nats, getrandom, socket2, libc or clap (CI runs
//! `cargo tree -p aerobridge-proto -e normal` and fails if one appears).
//!
//! ```text
//! telemetry   variable table (generated from data/*.tsv), frame encoder and decoder
//! packet      one tick's TCP + WebSocket bytes, built once and shared
//! profile     protocol v2 profiles: the registry and the tick's keyframes/deltas
//! queue       the per-client send queue: bounded, latest wins, whole frames only
//! ws          RFC 6455 without I/O: frame, mask, utf8, reader, handshake, close, deflate
//! command     command parsing (simd-json), validation, replies, line splitting
//! access      token, read-only, rate limit, Origin policy
//! admission   fair admission: how many new connections a worker takes on per tick
//! session     per-connection protocol logic: upgrade, WebSocket, data port, command port, v2
//! feed        the rules a NATS edge follows: which origin, whose update_counter
//! lease       standby origins: the lease one origin holds to publish a feed (renewed, refused,
//!             self-fenced) and the fence an edge keeps against an old leader
//! sim         the built-in flight model (a pure function of time and commands)
//! tick        what one tick builds: frame, packets, deflate variants, v2 messages, its report
//! tls         TLS as a layer: ciphertext in, plaintext out, shared packets sealed per client
//! disconnect  why a connection ended
//! log_limit   rate-limited warnings for events an attacker can repeat
//! ```
//!
//! Fuzz targets (`fuzz/`) and the criterion benches (`benches/`) depend on this crate only; their
//! bodies are in [`fuzzing`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod command;
pub mod disconnect;
pub mod feed;
#[doc(hidden)]
pub mod fuzzing;
pub mod lease;
pub mod log_limit;
pub mod packet;
pub mod profile;
pub mod queue;
pub mod session;
pub mod sim;
pub mod telemetry;
pub mod tick;
pub mod tls;
pub mod ws;

pub use disconnect::Disconnect;
