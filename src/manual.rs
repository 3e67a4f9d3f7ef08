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
//! sees a torn frame followed by more data. `--send-buffer` (SO_SNDBUF) bounds how much sits in the
//! kernel where the queue policy cannot reach it; see below for its default.
//!
//! # Sends that never block a kernel thread
//! io_uring runs a send inline when the socket has room; otherwise it arms a poll and retries on
//! writability, and if *that* retry gets EAGAIN again it punts the send to an io-wq kernel
//! worker, where it blocks (`sk_stream_wait_memory`) until the peer reads or dies. A retry fails
//! after poll said writable exactly when the host is under TCP memory pressure: poll looks at the
//! socket's own buffer, the send at the host's `tcp_mem`. 5 000 stalled clients with 512 KiB
//! buffers made that happen and cost 4 054 kernel threads (`tests/stall_flood.rs` against the
//! previous code). The socket's O_NONBLOCK does not help: io_uring ignores it and honours only
//! `MSG_DONTWAIT` on the operation. So, in [`crate::net::io`]:
//! - every send carries `MSG_DONTWAIT`: it completes at once with what fitted, or EAGAIN;
//! - a full socket is waited for with a one-shot `IORING_OP_POLL_ADD` (asleep in the ring);
//! - EAGAIN right after a writable poll is memory pressure: the writer sleeps 1 ms, doubling to
//!   32 ms, before polling again (`aerobridge_send_memory_pressure_total` counts it); sleeping
//!   then polling means a socket whose own buffer is full never spins on the timer;
//! - reads poll for readability first, so the `recv` that follows always completes inline, and
//!   no buffer is held while a client is silent (readers borrow a worker's scratch buffer);
//! - shutdown is a plain `shutdown(2)`: `IORING_OP_SHUTDOWN` always runs in an io-wq worker.
//!
//! Only waits are ever cancelled (by a close deadline), never sends, so the writer always knows
//! how much of a frame went out. As a second line of defence each worker caps its io-wq at
//! [`crate::runtime::IO_WQ_MAX_WORKERS`] threads per class (`IORING_REGISTER_IOWQ_MAX_WORKERS`;
//! compio exposes the ring fd but not the call, so it is one of the crate's two `unsafe` blocks;
//! the other is the kernel-TLS probe's `setsockopt`). The
//! rings are set up with `SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN`: one thread owns each
//! ring, so the kernel need not interrupt it for every completion.
//!
//! # Kernel memory per client
//! Data already in a socket's send buffer is beyond the queue policy's reach, and a stalled
//! client pins all of it. `--send-buffer auto` (the default) sets SO_SNDBUF to 3 frames of the
//! source's frame size (36 KiB for the built-in model; the kernel doubles it), which keeps a LAN
//! link busy between writer wake-ups while 10 000 stalled clients pin at most ~700 MiB, under a
//! 24 GiB host's `tcp_mem` pressure mark (1.5 GiB). The system default would autotune each socket
//! up to `tcp_wmem`'s 4 MiB. The startup log states the worst case next to the host's limits and
//! warns when it would cross the pressure mark.
//!
//! # Fair admission: established clients first
//! A flood of new connections used to compete with established clients for the same tick: each
//! new one costs its worker an adoption, a handshake and its first frames (a stalled data-port
//! client's socket fills with three or four), and on `main` 5 000 stalled clients connecting in
//! a burst made 40 healthy clients skip 8 frames each during the ramp (`tests/stall_flood.rs`,
//! debug build). Now a worker takes a tick's frames to its established clients first (dispatch,
//! then the writers run) and only then takes on new connections, at most its share of
//! `--admission-rate` per tick; the rest wait in its channel and the kernel's listen backlog.
//! The share is not fixed: [`aerobridge_proto::admission::AdmissionBudget`] starts at one per
//! tick, grows while ticks reach the worker on time, and halves when one arrives more than a
//! quarter of a period late, so a slower build or a loaded host admits more slowly instead of
//! making anyone skip a frame. Refusals (`--max-clients` reached) are cheap and bounded by their
//! own timers, so they are not held back: a flood is told at once.
//!
//! # A stalled worker catches up without losing frames
//! The hub builds ticks on its grid whatever a worker does, so when a worker's thread stalls
//! (descheduled on a loaded host, a run of page faults, a long run queue) the ticks wait in its
//! channel. Handed out back to back afterwards, they overflowed every queue of that worker at
//! once: the runtime polls the worker's loop after every 61 tasks, so a yield let only 61 of
//! its hundreds of writers run between two ticks, and every client lost exactly a queue
//! (8 frames) although none was slow. That fits every detail of the rare flood failure (one
//! worker's 500 clients, or both workers' 1 000, losing 8 frames each once). Now, after each tick, the
//! worker waits until every task queued at that moment has run once (a task spawned then runs
//! after them: compio's run queue is FIFO), and it catches up at most 4 ticks per period, so
//! clients' sockets take the burst at their own pace. `scripts/worker_stall.sh` freezes one
//! worker thread (cgroup freezer) while 1 000 clients stream: before, a 300 ms freeze cost
//! each of its 500 clients 8 frames in every run; now 300 ms and 1 s freezes cost none. The
//! delay is visible as `aerobridge_tick_dispatch_delay_seconds`. A stall longer than `--max-lag`
//! (2 s) still disconnects the worker's clients as slow consumers: their lag is real.
//!
//! Catching up is only for a worker that can: once a tick is older than half of `--max-lag`,
//! the worker is overloaded rather than stalled, and it hands its backlog out at once as before
//! (clients skip to the newest frame, counted). Waiting for the writers and pacing there made
//! the backlog grow: under host TCP memory pressure with the CPUs busy, the pressure test's
//! healthy clients were all cut off in CI and in 1 of 5 runs beside two CPU hogs; with the bound,
//! 6 of 6 survived (skipping 0–15 frames, as the old loop did).
//!
//! `--max-clients-per-ip` (1000) keeps one address from taking every slot. Loopback peers are
//! exempt by default, because this machine's own clients and load generators are not an
//! attacker the limit could stop (a local process can exhaust the host anyway), and a default
//! that refused a local benchmark at 1001 clients would surprise the people who run them; set
//! explicitly, the limit counts every address. An IPv4 peer on a dual-stack listener
//! (`::ffff:a.b.c.d`) counts as its IPv4 address. The refusal is in the port's own protocol
//! (HTTP 429, an error line, a close) and counted as `too_many_from_ip`.
//!
//! # Recordings that survive a crash
//! See [`crate::source::recording`]. A recording is the data a user cares about most at the
//! moment a crash happens, so `record` never holds more than half a second of it: every
//! [`FLUSH_EVERY`](crate::source::recording::FLUSH_EVERY) what came is closed into the file
//! (one independent zstd frame for `.zst`, a plain write otherwise) and `fdatasync`ed. A
//! concatenation of zstd frames is still one valid zstd file for every other tool; replay
//! finds each frame's end itself, so a torn last frame costs that frame and no more (its whole
//! lines are even recovered from the blocks that did arrive). A write that fails midway would
//! leave a torn record, so the file is cut back to its last whole flush before `record` stops
//! with the error.
//!
//! # Quiet logs under attack
//! Every event an attacker can repeat (refused connections, failed handshakes, protocol errors,
//! slow consumers, command floods, rejected commands, accept failures) logs through a
//! [`crate::log_limit::Throttle`]: the first 5 per 10 s in full, then one summary line with the
//! count. Metrics count every event regardless.
//!
//! # Protocol logic without I/O, in a crate of its own
//! What a connection's bytes mean lives in [`crate::session`], in the style of quinn-proto: a
//! session is fed bytes, the time and the results it asked for, and returns actions (send these
//! bytes, submit these commands, count these outcomes, park this session, close for this
//! reason). [`crate::net`] only moves bytes, timers and batches between sockets, sessions and the
//! tick. So every rule — reply policy, close codes, ping timers, flood handling, echo, HTTP
//! routing, the Origin check — is unit-tested with plain bytes, and the WebSocket session is
//! fuzzed with arbitrary input and time steps (it never panics, every reply is JSON, a Close is
//! the last thing it ever says).
//!
//! The session, the codec and everything they use form the crate `aerobridge-proto` (`proto/`),
//! so the compiler, not a convention, keeps them free of I/O: its dependencies name no runtime,
//! socket, randomness or CLI crate (CI checks `cargo tree`). What the core would otherwise
//! reach for comes in as an argument:
//! - **time**: every input carries `now` (bytes, end of file, timeouts, the tick's answer);
//!   the command gate's bucket starts full at the first command it sees; rate-limited logging
//!   counts its intervals from the `now` it is given; the profile builder is handed the shell's
//!   clock only to time compression for a metric;
//! - **randomness**: v2 session ids come from a [`crate::session::v2::SessionIds`] the shell
//!   supplies (the server's reads the OS's generator; tests count);
//! - **shared state changes** are actions: a v2 connection that ends answers `finish` with
//!   `Action::Park`, and the shell puts the session into the server's parked store, a map keyed by
//!   session id with an expiry index (letting expired sessions go touches only those). Nothing
//!   happens in a `Drop`.
//!
//! # Session protocol v2: profiles built once, shared by refcount
//! v2 ([`crate::session::v2`], contract in `docs/protocol-v2.md`) lets a client choose a subset,
//! a rate and deltas, without giving up the one rule that makes fan-out cheap: bytes are built
//! once and shared. A subscription is canonicalised into a profile (variable set in wire order,
//! `every`, mode; [`crate::profile`]); equal subscriptions are one profile, refcounted server-wide
//! and bounded by `--v2-max-profiles`. Each tick the hub builds one message per profile due on that
//! frame and frames it once per transport (WebSocket, line, length-prefixed); workers push an
//! `Arc` of it into each subscriber's queue. Tick work grows with profiles, never with clients.
//!
//! - **Values are copied, not encoded again.** The v1 encoder records where each value's text
//!   sits in the frame; profiles copy those bytes, and deltas compare them with the keyframe's.
//!   A rebuilt state therefore equals the v1 frame byte for byte, and no float formatting can
//!   differ between the two protocols (`loadtest --v2` checks every message).
//! - **Deltas are against the last keyframe, not the previous delta.** Latest-wins skipping
//!   never breaks a chain: any one delta plus its base rebuilds the state. Each delta holds its
//!   base keyframe's `Arc`, and the queue ([`crate::fanout::queue`]) sends that keyframe first to
//!   a client that has not had it (new subscriber, or one whose keyframe was skipped). It is the
//!   same pre-built packet: nothing is re-encoded per client.
//! - **Latest wins per stream.** The queue's overflow rule keeps the newest item of each stream
//!   (v1, or each profile), so a slow client with two subscriptions keeps both.
//! - **The switch happens at a frame boundary.** `hello` on a v1 connection drops the waiting v1
//!   frames but lets the one in flight finish, so no client ever sees a torn line.
//! - **Resume** parks a session's subscriptions (and so their profiles) for
//!   `--v2-resume-window` (the session's last action, `Park`, when its connection ends); `hello` with `resume` takes them back and queues each profile's
//!   current keyframe at once (it is kept for exactly this), so a reconnecting client has state
//!   within a broadcast period without waiting for the next keyframe.
//!
//! # Shared permessage-deflate
//! Per-connection WebSocket libraries compress for each client: CPU × clients, and ~300 KB of
//! zlib state each. A shared compressor without context takeover (uWebSockets') compresses once
//! but reaches only the standalone ratio (0.34 of raw here). [`crate::ws::deflate`] gets both:
//! each packet is compressed once on its own, and once with the previous packet of its stream as
//! preset dictionary. A client's inflate window holds exactly the compressed messages it inflated,
//! so the dictionary variant of packet N is valid for precisely the clients whose last compressed
//! message was N−1. The queue tracks that one (stream, seq) pair per client and hands out the
//! matching variant ([`crate::fanout::queue`]). A client that skipped frames, just joined, or had a
//! raw message in between gets the standalone one. Replies, pongs, heartbeats and errors go
//! uncompressed and never enter the window. `client_no_context_takeover` is always answered, so
//! one inflater per thread serves every client message, bounded by `--ws-max-message`.
//!
//! Implementation, chosen by measurement on two consecutive 11.4 KB frames of the built-in source
//! (throwaway benchmark; µs per frame on the 2-core development machine):
//!
//! | implementation | standalone | with the previous frame as dictionary |
//! |---|---|---|
//! | flate2 on zlib-rs, level 1 | 3 867 B, 12.4 µs | 1 140 B, 12.7 µs |
//! | flate2 on zlib-rs, level 6 | 2 838 B, 55.7 µs | **367 B, 21.9 µs** |
//! | flate2 on C zlib, level 1 | 3 225 B, 22.9 µs | 836 B, 19.7 µs |
//! | libdeflate, level 1 | 2 992 B, 15.0 µs | (no preset dictionary) |
//! | miniz_oxide, level 1 | 3 349 B, 18.1 µs | (no dictionary through flate2) |
//!
//! Nearly every client gets the dictionary variant, so it is worth a higher level: zlib-rs at level
//! 6 for it, and at level 1 for the standalone variant, 34 µs per tick for both. libdeflate has no
//! preset dictionary, and that rules it out.
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
//! # NATS: origins and edges
//! See [`crate::nats`]. An origin publishes each frame's bytes once; NATS does the fan-out to
//! edges, and each edge to its own clients, so the origin's cost does not grow with clients.
//! - **Core NATS, not JetStream.** At-most-once suits latest-wins telemetry: a frame not
//!   delivered in time is worthless later, so nothing is stored or redelivered. An origin drops
//!   frames while disconnected instead of letting the client buffer flush them late.
//! - **The origin's counters pass through.** An edge's clients see the origin's `update_counter`
//!   and `timestamp`, so gaps and latency are measured end to end. A frame built in a silence
//!   (two of the origin's periods, estimated from its frames) is stale and takes the next number;
//!   the origin's frame with that number, if it arrives after all, is dropped as late. That keeps
//!   the counters the origin's instead of shifting them by one per hiccup.
//! - **One origin per feed, followed by id.** Counters never go back for a connected client. When
//!   the followed origin is replaced (restart, failover), a new origin's lower counter is shifted
//!   to continue ours. Frames of a second origin publishing the same feed are dropped and logged
//!   loudly, on the edges and on both origins (which listen on their own feed with `no_echo`).
//! - **A short backlog, then latest wins.** Frames that arrive together (the edge's NATS thread
//!   was not scheduled, or the network stalled) are built in order, back to back, up to four;
//!   older ones are skipped. Four frames (80 ms at 50 Hz) cover a busy machine's hiccups without
//!   a gap and keep a slow link from queueing stale state. Every message is decoded, so garbage
//!   is counted and can never push a real frame out.
//! - **Secrets stay out of logs.** URLs are logged with `***` for credentials; the token has no
//!   `Debug`. async-nats does not read credentials from a URL, so they are split off and passed
//!   as options.
//!
//! # TLS: the shared packets, sealed per client
//! TLS must not undo the design: a tick still builds each packet once, and every client shares
//! it. Per client the only new work is the sealing itself.
//! - The core's [`aerobridge_proto::tls::TlsLayer`] wraps rustls' *unbuffered* connection. Its
//!   `encrypt` takes the shared `Bytes` by reference and rustls writes the records straight into
//!   the connection's own output buffer (one copy, the ciphertext). The buffered API would have
//!   copied the plaintext into rustls' queue first, and then the ciphertext out again.
//! - Everything the layer writes (handshake flights, records, alerts, a KeyUpdate answer) goes
//!   into that one buffer in the order rustls sealed it, so records leave in sequence-number
//!   order. The writer *lends* the buffer to an io_uring send (`MSG_DONTWAIT`, like every send)
//!   and gets it back; anything sealed meanwhile (the reader's alert) follows what the send had
//!   not finished. Nothing is ever cut: a record is finished or the connection dropped.
//! - The send queue picks the next frame (latest wins) *before* the layer sees it: skipping never
//!   drops or cuts a TLS record. With permessage-deflate the compressed frame is what is sealed,
//!   about 0.03 of the bytes.
//! - The buffer is kept between frames (reused, so streaming allocates nothing per client) unless
//!   a one-off message grew it past 32 KiB.
//! - The core names no crypto provider: the shell builds the `ServerConfig` (ring, AES-128-GCM
//!   first: the cipher is most of the per-client cost) and hands it in, so randomness still
//!   enters the core only as an argument. `cargo tree -p aerobridge-proto -e normal` still names
//!   no `ring` and no `getrandom`.
//! - Handshakes run before the session starts, on the worker that owns the connection, bounded
//!   by `--handshake-timeout`. Their CPU is budgeted per worker as a leaky bucket
//!   ([`aerobridge_proto::tls::HandshakeBudget`]): the measured cost of each synchronous step is
//!   debt that drains at `--tls-handshake-share` of real time. Only the synchronous step is timed
//!   (timing across an await would bill other tasks' work to the handshake).
//! - Kernel TLS would let the shared plaintext go to every socket as it is. The probe runs once,
//!   on the first TLS connection; this kernel answers ENOENT, so user-space rustls is what runs
//!   and is measured. Handing keys to a kernel that has TLS (`dangerous_extract_secrets`,
//!   `TLS_TX`/`TLS_RX`, and rustls' `KernelConnection` for tickets and KeyUpdate) is not built:
//!   it cannot be tested here.
//!
//! # Access control
//! See [`crate::access`]. Commands can be gated by a token (constant-time comparison, never
//! logged), switched off (`--read-only`), and rate-limited per connection (token bucket, bursts
//! of 2×; a connection that keeps flooding is dropped). Browsers are held to an Origin policy:
//! same-origin, loopback pages and `--allowed-origin` only, so a web page on the internet cannot
//! drive a simulator through a visitor's browser. Telemetry stays readable by everyone.
//!
//! # Client libraries
//! `clients/` holds three clients with one shape (Python, JavaScript, Rust), because a protocol
//! that every client implements by hand is implemented wrongly in as many ways: the issues of
//! other bridges' WebSocket users show the same three bugs (subscriptions lost after a
//! reconnect, silent staleness, reconnecting in a tight loop). Each one resumes its session
//! instead of subscribing again (the server keeps the subscriptions for the resume window), so
//! a reconnect costs no profile churn and no duplicate; each drops a keyframe it has already
//! shown, because a resumed or newly joined subscription may be sent the profile's current
//! keyframe, up to a second older than the live frame. One scenario file
//! (`clients/conformance/scenario.json`) is checked against all three by the same rules, so
//! they cannot drift apart. The bridge serves the JavaScript module itself
//! (`/aerobridge-client.js`): the dashboard uses it, and so can any page without a build step.
//!
//! # Plain HTTP on the WebSocket port
//! `GET /` (dashboard), `/metrics` and `/healthz` share the WebSocket listener: a request without
//! `Upgrade: websocket` is routed instead of refused. Metrics read the per-worker single-writer
//! counters with relaxed loads; scraping takes no lock and touches nothing on the hot path.
//!
//! # Echo mode
//! `aerobridge echo` exists for the Autobahn TestSuite: the same listener, handshake, codec, queue
//! and writer, with messages echoed as control items (never skipped) instead of parsed as commands.
