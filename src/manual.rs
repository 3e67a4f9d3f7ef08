//! Design decisions, written down next to the code (in the spirit of rustls' `manual`).
//!
//! # One encode, one allocation, shared by all
//! Each tick the hub encodes the frame into a reused buffer (key prefixes pre-rendered, numbers
//! via ryu), then builds one buffer `[ws header | payload]`. The WebSocket packet is the whole
//! buffer, the TCP packet a slice of it without the header: one allocation and one copy per tick,
//! whatever the number of clients. A client's queue holds an `Arc<Packet>`; writing it clones a
//! `Bytes` (refcount). This is why the WebSocket frame codec is written by hand
//! (see [`crate::ws`]).
//!
//! # Threads
//! - `aerobridge-tick`: owns the [`crate::source::Source`], runs on a fixed grid
//!   (`start + n·period`; a late tick never shifts later ones, missed slots are skipped and
//!   counted), applies commands first so a command shows in the very next frame.
//! - `aerobridge-worker-N`: a compio runtime each (io_uring on Linux, IOCP on Windows). A tick
//!   reaches a worker as one channel message; the worker pushes it into each of its clients' queues.
//! - `aerobridge-accept-*`: blocking `accept()` per listener, handing `std::net::TcpStream`s to
//!   the least-loaded worker. A compio `TcpStream` is not `Send`, and IOCP binds a socket to the
//!   completion port of the thread that adopts it, so sockets travel as std streams.
//!
//! # Slow consumers
//! See [`crate::fanout::queue`]. Lag is the age of the frame being written: a client reading
//! slowly but steadily gets every frame it can take, newest first after an overflow; a client that
//! stops reading is closed after `--max-lag` (WebSocket Close 4000 "slow consumer"). The frame in
//! flight is always finished (within the close grace, 1 s) before the Close frame, so no client
//! sees a torn frame followed by more data. `--send-buffer` (SO_SNDBUF, 256 KiB by default) bounds
//! how much sits in the kernel where the queue policy cannot reach it.
//!
//! # WebSocket replies
//! Text messages are commands. Replies go only to commands with an `"id"`, as their own text
//! message, so upstream clients (no ids, every message parsed as telemetry) never see one.
//!
//! # Timestamps
//! `timestamp` is wall-clock microseconds since the UNIX epoch at build time. Upstream used a
//! boot-relative timer, which no client can relate to its own clock; ours lets a client on the
//! same clock measure latency (loadtest does).
//!
//! # Duplicate keys
//! Upstream writes `Controls.Magnetos1` and `Controls.ParkingBrake` twice. We send each once, at
//! its first position, so the object has no duplicate keys (JSON parsers disagree on those).
//!
//! # Pacing and timestamps of relayed frames
//! A relay does not sample upstream on its own grid (that would add half a period, 10 ms at
//! 50 Hz, on average): its [`crate::source::Source::pacing`] is `Upstream`, so the tick waits on
//! the reader thread and re-broadcasts each upstream frame the moment it arrives. While upstream
//! is silent a stale frame (`data_valid: 0`) goes out every two periods so clients can tell.
//! `update_counter` is always ours (gaps stay meaningful per hop). `timestamp` passes through
//! when upstream stamps wall-clock time (another aerobridge), so latency is measured end to end
//! across a chain; against upstream's boot-relative timer we stamp our own.
//!
//! # Access control
//! See [`crate::access`]. Commands can be gated by a token (constant-time comparison, never
//! logged), switched off (`--read-only`), and rate-limited per connection (token bucket, bursts
//! of 2×; a connection that keeps flooding is dropped). Browsers are held to an Origin policy:
//! same-origin, loopback pages and `--allowed-origin` only, so a web page on the internet cannot
//! drive a simulator through a visitor's browser. Telemetry stays readable by everyone.
//!
//! # Plain HTTP on the WebSocket port
//! `GET /` (dashboard), `/metrics` and `/healthz` share the WebSocket listener: a request without
//! `Upgrade: websocket` is routed instead of refused. Metrics read the per-worker single-writer
//! counters with relaxed loads; scraping takes no lock and touches nothing on the hot path.
//!
//! # Echo mode
//! `aerobridge echo` exists for the Autobahn TestSuite: the same listener, handshake, codec, queue
//! and writer, with messages echoed as control items (never skipped) instead of parsed as commands.
