//! A worker: one thread, one compio runtime, a share of the clients. It receives each tick once
//! and pushes it into its clients' queues (a refcount bump each); the connection handler it is
//! given runs each connection (for telemetry clients, a reader task and a writer task).

use crate::fanout::connections::{ConnectionInfo, Connections};
use crate::fanout::hub::{Tick, WorkerMsg};
use crate::fanout::notify::LocalNotify;
use crate::fanout::queue::{ControlOverflow, Frame, Pushed, QueueLimits, SendQueue};
use crate::fanout::stats::{Disconnect, WorkerStats};
use crate::packet::{Framing, Transport};
use crate::profile::{ProfileMsg, ProfileRef};
use crate::ws::{close, frame};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the fan-out needs to know of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct WorkerLimits {
    /// Per-client queue bounds and lag limit.
    pub queue: QueueLimits,
    /// How long a closing client's writer may take to finish.
    pub close_grace: Duration,
    /// At most this many new connections taken on per tick (`None`: no ticks, as in echo mode,
    /// so no bound). The rest wait for the next tick.
    pub admissions_per_tick: Option<usize>,
    /// The broadcast period (how late a tick may reach the worker before admission slows down).
    pub period: Duration,
}

pub use aerobridge_proto::admission::AdmissionBudget;

/// Whether an accepted connection is served, or refused (politely) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Admitted,
    /// `--max-clients` connections are open.
    ServerFull,
    /// `--max-clients-per-ip` connections are open from its address.
    TooManyFromIp,
}

/// Connection accounting shared by the acceptors and every worker: `--max-clients`,
/// `--max-clients-per-ip` and the least-loaded choice.
#[derive(Debug)]
pub struct Admission {
    /// Most connections admitted at once.
    pub max_clients: usize,
    /// Most connections from one address; 0: no limit.
    pub max_per_ip: usize,
    /// Whether loopback peers count against `max_per_ip`.
    pub per_ip_counts_loopback: bool,
    /// Open connections per counted address (entries leave at zero).
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Admitted connections, all workers together.
    pub connected: AtomicUsize,
    /// Connections assigned to each worker.
    pub load: Vec<AtomicUsize>,
    /// Every telemetry connection's standing (`GET /connections`).
    pub connections: Connections,
    /// Clients that agreed permessage-deflate: while there are none, the tick compresses nothing.
    pub deflate_clients: Arc<AtomicUsize>,
}

impl Admission {
    /// Accounting for `workers` workers, at most `max_clients` connections and `max_per_ip`
    /// from one address (loopback peers too when `per_ip_counts_loopback`).
    pub fn new(
        workers: usize,
        max_clients: usize,
        max_per_ip: usize,
        per_ip_counts_loopback: bool,
    ) -> Self {
        Self {
            max_clients,
            max_per_ip,
            per_ip_counts_loopback,
            per_ip: Default::default(),
            connected: AtomicUsize::new(0),
            load: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            connections: Connections::default(),
            deflate_clients: Arc::default(),
        }
    }

    /// Takes a connection from `ip`: whether it is admitted (else it is to be refused
    /// politely), the address it counts against (to [`release`](Self::release) when it ends),
    /// and the least-loaded worker it goes to (refusals are handled by a worker too).
    pub fn admit(&self, ip: std::net::IpAddr) -> (Verdict, Option<std::net::IpAddr>, usize) {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: one address, one count.
        let ip = ip.to_canonical();
        let counted = (self.max_per_ip > 0 && (self.per_ip_counts_loopback || !ip.is_loopback()))
            .then_some(ip);
        let mut verdict = Verdict::Admitted;
        if let Some(ip) = counted {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_default();
            if *n >= self.max_per_ip {
                verdict = Verdict::TooManyFromIp;
            } else {
                *n += 1;
            }
        }
        if verdict == Verdict::Admitted
            && self.connected.fetch_add(1, Ordering::Relaxed) >= self.max_clients
        {
            self.connected.fetch_sub(1, Ordering::Relaxed);
            verdict = Verdict::ServerFull;
            if let Some(ip) = counted {
                self.release(ip);
            }
        }
        let counted = counted.filter(|_| verdict == Verdict::Admitted);
        let index = (0..self.load.len())
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[index].fetch_add(1, Ordering::Relaxed);
        (verdict, counted, index)
    }

    /// A connection from `ip` (as [`admit`](Self::admit) counted it) ended.
    pub fn release(&self, ip: std::net::IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One telemetry client, as the worker and its connection task see it.
pub struct Client {
    /// TCP lines or WebSocket frames.
    pub transport: Transport,
    /// Its queue.
    pub queue: RefCell<SendQueue>,
    /// Wakes its writer.
    pub notify: LocalNotify,
    reason: Cell<Option<Disconnect>>,
    close_deadline: Cell<Option<Instant>>,
    /// Position in the worker's client list (kept current by swap-removal), so leaving is O(1)
    /// even when thousands of clients leave at once.
    slot: Cell<usize>,
    /// Its line on `/connections`, and its own counters.
    pub info: Arc<ConnectionInfo>,
    /// Speaks v2: receives its profiles' messages instead of v1 frames.
    v2: Cell<bool>,
    /// v2: the distinct profiles it receives.
    profiles: RefCell<Vec<ProfileRef>>,
    /// When its writer last finished an item (v2 heartbeats go out after silence).
    pub last_sent: Cell<Instant>,
}

impl Client {
    /// Starts closing for `reason` (first reason wins): drops waiting frames, queues `last` (a
    /// Close frame) after what is in flight, and gives the writer `grace` to finish. Returns the
    /// number of frames dropped.
    pub fn start_close(&self, reason: Disconnect, last: Option<Bytes>, grace: Duration) -> u64 {
        if self.reason.get().is_none() {
            self.reason.set(Some(reason));
        }
        let (dropped, _) = self.queue.borrow_mut().close(last);
        // A later, more urgent close (shutdown) may shorten the deadline, never extend it.
        let deadline = Instant::now() + grace;
        if self.close_deadline.get().is_none_or(|d| deadline < d) {
            self.close_deadline.set(Some(deadline));
        }
        self.notify.notify();
        dropped
    }

    /// Queues a control item (pong, reply) ahead of telemetry.
    pub fn push_control(&self, bytes: Bytes) -> Result<(), ControlOverflow> {
        if self.queue.borrow_mut().push_control(bytes)? {
            self.notify.notify();
        }
        Ok(())
    }

    /// Whether it speaks v2.
    pub fn is_v2(&self) -> bool {
        self.v2.get()
    }

    /// Why it is closing, if it is.
    pub fn reason(&self) -> Option<Disconnect> {
        self.reason.get()
    }

    /// When a closing client's writer must give up.
    pub fn close_deadline(&self) -> Option<Instant> {
        self.close_deadline.get()
    }
}

/// A worker's own state (one per runtime thread). `A` is the application context its
/// connection handler needs; the fan-out itself never looks into it.
pub struct Worker<A> {
    /// Position among the workers.
    pub index: usize,
    /// The application context (for the connection handler).
    pub app: Arc<A>,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    limits: WorkerLimits,
    admission: Arc<Admission>,
    clients: RefCell<Vec<Rc<Client>>>,
    live_connections: Cell<usize>,
    shutting_down: Cell<bool>,
    last_write: Cell<Option<(u64, Instant, Instant)>>,
    last_seq: Cell<u64>,
    scratch: RefCell<Vec<Vec<u8>>>,
}

impl<A> Worker<A> {
    /// Size of a scratch read buffer.
    pub const SCRATCH: usize = 8 * 1024;

    /// Lends a read buffer (empty, [`Self::SCRATCH`] bytes of capacity). Readers borrow one only
    /// once their socket is readable and give it back right after, so an idle client holds none.
    pub fn take_scratch(&self) -> Vec<u8> {
        self.scratch
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(Self::SCRATCH))
    }

    /// Gives a buffer from [`take_scratch`](Self::take_scratch) back (a few are kept).
    pub fn return_scratch(&self, mut buf: Vec<u8>) {
        let mut pool = self.scratch.borrow_mut();
        if pool.len() < 4 && buf.capacity() >= Self::SCRATCH && buf.capacity() <= 4 * Self::SCRATCH
        {
            buf.clear();
            pool.push(buf);
        }
    }

    /// Adds a telemetry client; it receives every tick from now on (v1 until it says `hello`).
    pub fn register(&self, transport: Transport, peer: std::net::SocketAddr) -> Rc<Client> {
        let client = Rc::new(Client {
            transport,
            queue: RefCell::new(SendQueue::new(transport.framing(), self.limits.queue)),
            notify: LocalNotify::default(),
            reason: Cell::new(None),
            close_deadline: Cell::new(None),
            slot: Cell::new(usize::MAX),
            info: self.admission.connections.add(peer, transport),
            v2: Cell::new(false),
            profiles: RefCell::new(Vec::new()),
            last_sent: Cell::new(Instant::now()),
        });
        if self.shutting_down.get() {
            client.start_close(
                Disconnect::Shutdown,
                self.close_frame_for(transport, Disconnect::Shutdown),
                self.limits.close_grace,
            );
        }
        let mut clients = self.clients.borrow_mut();
        client.slot.set(clients.len());
        clients.push(Rc::clone(&client));
        drop(clients);
        self.gauge(transport).add(1);
        client
    }

    /// Removes a telemetry client.
    pub fn unregister(&self, client: &Rc<Client>) {
        let mut clients = self.clients.borrow_mut();
        let i = client.slot.replace(usize::MAX);
        if clients.get(i).is_some_and(|c| Rc::ptr_eq(c, client)) {
            clients.swap_remove(i);
            if let Some(moved) = clients.get(i) {
                moved.slot.set(i);
            }
            self.gauge(client.transport).sub(1);
            if client.v2.get() {
                self.stats.v2_clients.sub(1);
            }
            if client.info.deflate.load(Ordering::Relaxed) != 0 {
                self.admission
                    .deflate_clients
                    .fetch_sub(1, Ordering::Relaxed);
            }
            self.admission.connections.remove(client.info.id);
            for p in client.profiles.take() {
                p.shared().clients.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// permessage-deflate was agreed with a WebSocket client.
    pub fn enable_deflate(&self, client: &Client, agreed: crate::ws::deflate::Agreed) {
        client.queue.borrow_mut().set_deflate(agreed.shared());
        self.admission
            .deflate_clients
            .fetch_add(1, Ordering::Relaxed);
        client
            .info
            .deflate
            .store(if agreed.shared() { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Switches a client to v2 at the next frame boundary (the frame in flight finishes; waiting
    /// v1 frames are dropped): from now on it receives only its profiles, framed as `framing`.
    pub fn enter_v2(&self, client: &Client, framing: Framing) {
        let dropped = client.queue.borrow_mut().enter_v2(framing);
        self.stats.frames_skipped.add(dropped);
        ConnectionInfo::add(&client.info.frames_skipped, dropped);
        if !client.v2.replace(true) {
            self.stats.v2_clients.add(1);
            client.info.protocol.store(2, Ordering::Relaxed);
        }
    }

    /// Sets the profiles a v2 client receives (its distinct subscriptions) and queues
    /// `keyframes` for it now (new subscriptions, resume). Messages of profiles it left are
    /// dropped from its queue.
    pub fn set_profiles(
        &self,
        client: &Client,
        profiles: Vec<ProfileRef>,
        keyframes: Vec<Arc<ProfileMsg>>,
    ) {
        let old = client.profiles.replace(profiles);
        let new = client.profiles.borrow();
        let mut queue = client.queue.borrow_mut();
        let mut dropped = 0;
        for p in &old {
            if !new.iter().any(|n| n.same(p)) {
                dropped += queue.drop_profile(p.id());
            }
            p.shared().clients.fetch_sub(1, Ordering::Relaxed);
        }
        for p in new.iter() {
            p.shared().clients.fetch_add(1, Ordering::Relaxed);
        }
        drop(old);
        let now = Instant::now();
        let mut wake = false;
        for key in keyframes {
            if let Pushed::Queued { wake: w, skipped } = queue.push(Frame::Profile(key), now) {
                wake |= w;
                dropped += skipped;
            }
        }
        drop(queue);
        self.stats.frames_skipped.add(dropped);
        ConnectionInfo::add(&client.info.frames_skipped, dropped);
        if wake {
            client.notify.notify();
        }
    }

    fn gauge(&self, transport: Transport) -> &crate::fanout::stats::Counter {
        match transport {
            Transport::Tcp => &self.stats.tcp_clients,
            Transport::WebSocket => &self.stats.ws_clients,
        }
    }

    /// Pushes one tick into every client's queue: v1 clients get the full frame, v2 clients the
    /// messages of their profiles due on this tick (each a refcount bump).
    pub fn dispatch(&self, tick: &Tick) {
        self.stats.ticks.add(1);
        self.last_seq.set(tick.packet.counter);
        let now = Instant::now();
        let mut skipped = 0;
        let mut waiting = 0;
        for client in self.clients.borrow().iter() {
            let mut queue = client.queue.borrow_mut();
            let profiles = client.v2.get().then(|| client.profiles.borrow());
            let pushed = queue.push_tick(tick, profiles.as_deref().map(Vec::as_slice), now);
            waiting += queue.waiting_frames() as u64;
            client
                .info
                .lag_us
                .store(queue.lag(now).as_micros() as u64, Ordering::Relaxed);
            drop(queue);
            let s = match pushed {
                Pushed::Queued { wake, skipped: s } => {
                    if wake {
                        client.notify.notify();
                    }
                    s
                }
                Pushed::Lagging => 1 + self.close_client(client, Disconnect::SlowConsumer),
                Pushed::Closing => 1,
            };
            ConnectionInfo::add(&client.info.frames_skipped, s);
            skipped += s;
        }
        self.stats.frames_skipped.add(skipped);
        self.stats.queued_frames.set(waiting);
    }

    /// The `update_counter` of the last tick dispatched (heartbeats carry it).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.get()
    }

    /// Notes that a frame of tick `counter` (built at `built`) finished writing; when a newer tick
    /// starts finishing, the previous tick's build-to-last-write time is recorded.
    pub fn frame_written(&self, counter: u64, built: Instant) {
        let now = Instant::now();
        match self.last_write.get() {
            Some((c, _, _)) if c == counter => self.last_write.set(Some((c, built, now))),
            Some((c, b, done)) if counter > c => {
                self.stats
                    .tick_to_last_write
                    .observe(done.saturating_duration_since(b));
                self.last_write.set(Some((counter, built, now)));
            }
            None => self.last_write.set(Some((counter, built, now))),
            Some(_) => {} // a laggard finishing an old tick
        }
    }

    /// Closes a telemetry client for `reason`, with the Close frame its transport needs.
    pub fn close_client(&self, client: &Client, reason: Disconnect) -> u64 {
        if client.reason().is_none() {
            match reason {
                Disconnect::SlowConsumer => aerobridge_proto::limited!(
                    crate::log_limit::SLOW_CONSUMER,
                    std::time::Instant::now(),
                    info,
                    worker = self.index,
                    max_lag_ms = self.limits.queue.max_lag.as_millis() as u64,
                    "disconnecting slow consumer"
                ),
                _ => tracing::debug!(
                    worker = self.index,
                    reason = reason.as_str(),
                    "closing client"
                ),
            }
        }
        client.start_close(
            reason,
            self.close_frame_for(client.transport, reason),
            self.limits.close_grace,
        )
    }

    fn close_frame_for(&self, transport: Transport, reason: Disconnect) -> Option<Bytes> {
        if transport != Transport::WebSocket {
            return None;
        }
        Some(match reason {
            Disconnect::SlowConsumer => frame::close_frame(
                close::SLOW_CONSUMER,
                &format!(
                    "slow consumer: more than {} ms behind",
                    self.limits.queue.max_lag.as_millis()
                ),
            ),
            Disconnect::Shutdown => frame::close_frame(close::GOING_AWAY, "server shutting down"),
            _ => frame::close_frame(close::NORMAL, ""),
        })
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Tracks a connection task (telemetry, command or refusal) for the whole of its life.
    pub fn connection_guard(
        self: &Rc<Self>,
        admitted: bool,
        counted_ip: Option<std::net::IpAddr>,
    ) -> ConnectionGuard<A> {
        self.live_connections.set(self.live_connections.get() + 1);
        ConnectionGuard {
            worker: Rc::clone(self),
            admitted,
            counted_ip,
            reason: Cell::new(None),
        }
    }
}

/// Queues the messages of `profiles` due on `tick`.
/// Undoes a connection's accounting when its task ends, however it ends (cancellation included).
pub struct ConnectionGuard<A> {
    worker: Rc<Worker<A>>,
    admitted: bool,
    /// The address it counts against (`--max-clients-per-ip`).
    counted_ip: Option<std::net::IpAddr>,
    reason: Cell<Option<Disconnect>>,
}

impl<A> ConnectionGuard<A> {
    /// Records why the connection ended (counted on drop).
    pub fn set_reason(&self, reason: Disconnect) {
        self.reason.set(Some(reason));
    }
}

impl<A> Drop for ConnectionGuard<A> {
    fn drop(&mut self) {
        let w = &self.worker;
        w.live_connections.set(w.live_connections.get() - 1);
        w.admission.load[w.index].fetch_sub(1, Ordering::Relaxed);
        if self.admitted {
            w.admission.connected.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(ip) = self.counted_ip {
            w.admission.release(ip);
        }
        let reason = self.reason.get().unwrap_or(if w.shutting_down.get() {
            Disconnect::Shutdown
        } else {
            Disconnect::IoError
        });
        w.stats.disconnect(reason);
    }
}

/// What a worker needs to start.
pub struct WorkerSetup<A, C, H> {
    /// Position among the workers.
    pub index: usize,
    /// The application context handed to `handler`.
    pub app: Arc<A>,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// Queue bounds and close grace.
    pub limits: WorkerLimits,
    /// Shared connection accounting.
    pub admission: Arc<Admission>,
    /// Ticks, connections (`C`) and shutdown.
    pub rx: flume::Receiver<WorkerMsg<C>>,
    /// Runs one connection on this worker (injected: the fan-out knows no sockets).
    pub handler: H,
}

/// Starts a worker on its own thread. Sends the I/O driver in use (or the error) on `ready`.
pub fn spawn<A, C, H, F>(
    setup: WorkerSetup<A, C, H>,
    ready: std::sync::mpsc::Sender<std::io::Result<compio::driver::DriverType>>,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    A: Send + Sync + 'static,
    C: Send + 'static,
    H: Fn(Rc<Worker<A>>, C) -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let index = setup.index;
    std::thread::Builder::new()
        .name(format!("aerobridge-worker-{index}"))
        .spawn(move || {
            let runtime = match crate::runtime::build() {
                Ok((rt, capped)) => {
                    if let Some(Err(e)) = capped {
                        tracing::warn!(worker = index, error = %e, "could not cap io_uring's kernel worker pool (IORING_REGISTER_IOWQ_MAX_WORKERS); sends are non-blocking regardless");
                    }
                    rt
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(runtime.driver_type()));
            runtime.block_on(run(setup));
        })
}

async fn run<A, C, H, F>(setup: WorkerSetup<A, C, H>)
where
    H: Fn(Rc<Worker<A>>, C) -> F,
    F: Future<Output = ()> + 'static,
{
    let WorkerSetup {
        index,
        app,
        stats,
        limits,
        admission,
        rx,
        handler,
    } = setup;
    let worker = Rc::new(Worker {
        index,
        app,
        stats,
        limits,
        admission,
        clients: RefCell::new(Vec::new()),
        live_connections: Cell::new(0),
        shutting_down: Cell::new(false),
        last_write: Cell::new(None),
        last_seq: Cell::new(0),
        scratch: RefCell::new(Vec::new()),
    });
    // Fair admission: established clients first. Each tick, the writers take the tick's frames
    // before new connections are taken on (accept, handshake, first frames), at most
    // `admissions_per_tick` of them; the rest wait for the next tick.
    let admit = |connection| {
        compio::runtime::spawn(handler(Rc::clone(&worker), connection)).detach();
    };
    let mut admission = worker
        .limits
        .admissions_per_tick
        .map(|max| AdmissionBudget::new(max, worker.limits.period));
    let mut budget = admission.map_or(usize::MAX, |a| a.current());
    let mut waiting: std::collections::VecDeque<C> = std::collections::VecDeque::new();
    let mut last_dispatch: Option<Instant> = None;
    while let Ok(msg) = rx.recv_async().await {
        match msg {
            WorkerMsg::Tick(tick) => {
                // A worker too far behind to catch up in time hands its backlog out at once:
                // clients' queues then skip to the newest frame (latest state wins, counted).
                // Pacing it would keep every client's lag growing until all were cut off.
                let stale = tick.packet.built.elapsed() > worker.limits.queue.max_lag / 2;
                // Catching up after a stall: a few ticks per period, not all at once.
                if let (Some(prev), false) = (last_dispatch, stale) {
                    let next = prev + worker.limits.period / CATCH_UP_PER_PERIOD;
                    if Instant::now() < next {
                        compio::time::sleep_until(next).await;
                    }
                }
                last_dispatch = Some(Instant::now());
                let late = tick.packet.built.elapsed();
                worker.stats.tick_dispatch_delay.observe(late);
                worker.dispatch(&tick);
                // Let the writers take this tick before anything new runs: before the next tick
                // is dispatched (after a stall, handing a backlog of ticks out back to back
                // would overflow every client's queue at once), and before connections waiting
                // for admission.
                if !stale {
                    every_queued_task_runs_once().await;
                } else if !waiting.is_empty() {
                    yield_now().await;
                }
                budget = admission.as_mut().map_or(usize::MAX, |a| a.on_tick(late));
                while budget > 0 {
                    let Some(connection) = waiting.pop_front() else {
                        break;
                    };
                    budget -= 1;
                    admit(connection);
                }
            }
            WorkerMsg::Refusal(connection) => admit(connection),
            WorkerMsg::Connection(connection) if budget > 0 && waiting.is_empty() => {
                budget -= 1;
                admit(connection);
            }
            WorkerMsg::Connection(connection) => {
                worker.stats.admissions_deferred.add(1);
                waiting.push_back(connection);
            }
            WorkerMsg::Shutdown => break,
        }
    }
    drop(waiting);
    // Shutdown: every telemetry client finishes its frame in flight and gets Close 1001, bounded
    // by the close grace. Connections still open after that are dropped with the runtime.
    worker.shutting_down.set(true);
    let clients: Vec<Rc<Client>> = worker.clients.borrow().clone();
    let mut dropped = 0;
    for client in &clients {
        dropped += worker.close_client(client, Disconnect::Shutdown);
    }
    worker.stats.frames_skipped.add(dropped);
    drop(clients);
    let deadline = Instant::now() + worker.limits.close_grace + Duration::from_millis(100);
    while !worker.clients.borrow().is_empty() && Instant::now() < deadline {
        compio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After a stall (the worker's thread descheduled, a page fault, a long run queue) ticks wait in
/// the worker's channel; it hands them out at most this many per period. All at once, they would
/// arrive faster than clients' sockets take them and overflow every queue (`--queue-frames`),
/// so each client would lose a queue of frames although none is slow. At 4 per period, a stall
/// of N periods is caught up in about N/3 periods, and a client needs to take frames at no more
/// than four times the normal rate meanwhile.
///
/// Measured (`scripts/worker_stall.sh`: one worker's thread frozen while 1 000 clients stream at
/// 50 Hz): all at once, every client of that worker lost 8 frames (a whole queue) after a 300 ms
/// freeze; with the writers let run between ticks but no pacing, 0 lost in 10 of 11 runs at
/// 300 ms, and some clients lost frames in 2 of 3 at 500 ms; paced at 2 or 4 per period, 0 lost
/// after 500 ms and 1 s freezes (3 runs each).
///
/// Only while a tick is younger than half of `--max-lag`. A worker further behind is overloaded,
/// not merely stalled (e.g. under host TCP memory pressure on a starved CPU): waiting for its
/// writers and pacing would let its backlog, and every client's lag, grow until all its clients
/// were cut off as slow consumers (seen in `tests/stall_flood.rs`'s pressure test in CI). It hands
/// such ticks out at once, and its clients skip to the newest frame.
const CATCH_UP_PER_PERIOD: u32 = 4;

/// Completes once every task now ready on this runtime has run once. compio's run queue is
/// FIFO, so a task spawned now runs after them. Yielding is not enough: the runtime polls the
/// future it blocks on (this worker's loop) after every 61 tasks, and a worker has hundreds of
/// writers woken by one tick.
async fn every_queued_task_runs_once() {
    let _ = compio::runtime::spawn(async {}).await;
}

/// Goes to the back of this runtime's run queue (in tests, also a stand-in for waiting on a
/// send's completion).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{Admission, Verdict};
    use std::net::IpAddr;

    const CLIENTS: u64 = 300;
    const TICKS: u64 = 16;

    /// Hands a backlog of [`TICKS`] ticks at `period` to a worker of [`CLIENTS`] clients at once
    /// (as after its thread was descheduled for that long). Returns the frames written and
    /// skipped, and how long it took until every frame was one or the other. The writers here
    /// "send" by going to the back of the run queue, as a real send waits for its completion.
    fn hand_out_a_backlog(period: std::time::Duration) -> (u64, u64, std::time::Duration) {
        use super::{spawn, WorkerLimits, WorkerMsg, WorkerSetup};
        use crate::fanout::queue::Next;
        use crate::fanout::queue::QueueLimits;
        use crate::fanout::stats::WorkerStats;
        use crate::packet::Transport;
        use aerobridge_proto::profile::Profiles;
        use aerobridge_proto::tick::{TickBuilder, TickInput};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        let written = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(WorkerStats::default());
        let (tx, rx) = flume::unbounded();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counted = Arc::clone(&written);
        let setup = WorkerSetup {
            index: 0,
            app: Arc::new(()),
            stats: Arc::clone(&stats),
            limits: WorkerLimits {
                queue: QueueLimits::DEFAULT,
                close_grace: Duration::from_millis(100),
                admissions_per_tick: None,
                period,
            },
            admission: Arc::new(Admission::new(1, 10_000, 0, false)),
            rx,
            handler: move |worker: std::rc::Rc<super::Worker<()>>, (): ()| {
                let client = worker.register(Transport::Tcp, "127.0.0.1:1".parse().unwrap());
                let written = Arc::clone(&counted);
                async move {
                    loop {
                        let next = client.queue.borrow_mut().take_next();
                        match next {
                            Next::Idle => client.notify.wait().await,
                            Next::Finished => break,
                            Next::Write(_) => {
                                super::yield_now().await;
                                let done = client.queue.borrow_mut().complete();
                                written.fetch_add(done.frames, Ordering::Relaxed);
                            }
                        }
                    }
                    worker.unregister(&client);
                }
            },
        };
        let thread = spawn(setup, ready_tx).unwrap();
        ready_rx.recv().unwrap().unwrap();
        for _ in 0..CLIENTS {
            tx.send(WorkerMsg::Connection(())).unwrap();
        }
        let mut builder = TickBuilder::new(
            Profiles::new(4),
            50.0,
            aerobridge_proto::ws::deflate::Mode::Off,
            Instant::now,
        );
        let vars = aerobridge_proto::telemetry::Variables::new();
        let started = Instant::now();
        for n in 1..=TICKS {
            let (tick, _) = builder.build(TickInput {
                variables: &vars,
                valid: true,
                timestamp_us: n,
                upstream_counter: None,
                now: Instant::now(),
                compressing: false,
            });
            tx.send(WorkerMsg::Tick(tick)).unwrap();
        }
        // Every frame is either written or skipped; wait until all are accounted for.
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.frames_skipped.get() + written.load(Ordering::Relaxed) < CLIENTS * TICKS {
            assert!(Instant::now() < deadline, "frames unaccounted for");
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = started.elapsed();
        tx.send(WorkerMsg::Shutdown).unwrap();
        thread.join().unwrap();
        assert_eq!(stats.ticks.get(), TICKS);
        (
            written.load(Ordering::Relaxed),
            stats.frames_skipped.get(),
            took,
        )
    }

    /// With more writers than the runtime runs between two polls of the worker loop (61), ticks
    /// handed out back to back overflowed every queue: each client lost 8 frames. A period of a
    /// microsecond leaves the pacing no part in it.
    #[test]
    fn a_backlog_of_ticks_waits_for_the_writers_between_ticks() {
        let (written, skipped, _) = hand_out_a_backlog(std::time::Duration::from_micros(1));
        assert_eq!(
            (written, skipped),
            (CLIENTS * TICKS, 0),
            "(written, skipped)"
        );
    }

    /// After a stall the backlog goes out a few ticks per period, not all at once (clients'
    /// sockets take frames at their own pace).
    #[test]
    fn a_backlog_of_ticks_is_caught_up_a_few_ticks_per_period() {
        let period = std::time::Duration::from_millis(20);
        let (written, skipped, took) = hand_out_a_backlog(period);
        assert_eq!(
            (written, skipped),
            (CLIENTS * TICKS, 0),
            "(written, skipped)"
        );
        // No faster than 4 per period (what `CATCH_UP_PER_PERIOD` was measured at).
        let paced = (TICKS as u32 - 1) * period / 4;
        assert!(
            took >= paced,
            "{TICKS} ticks handed out in {took:?} (< {paced:?})"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_limits_count_one_address_once_and_free_slots_on_release() {
        let a = Admission::new(2, 100, 2, false);
        let (v1, c1, _) = a.admit(ip("192.0.2.1"));
        // A dual-stack listener's view of the same IPv4 peer is the same address.
        let (v2, c2, _) = a.admit(ip("::ffff:192.0.2.1"));
        let (v3, c3, _) = a.admit(ip("192.0.2.1"));
        assert_eq!(
            (v1, v2, v3),
            (Verdict::Admitted, Verdict::Admitted, Verdict::TooManyFromIp)
        );
        assert_eq!(
            (c1, c2, c3),
            (Some(ip("192.0.2.1")), Some(ip("192.0.2.1")), None)
        );
        assert_eq!(a.admit(ip("192.0.2.2")).0, Verdict::Admitted);
        // Loopback is exempt unless the limit was set explicitly.
        for _ in 0..5 {
            let (verdict, counted, _) = a.admit(ip("127.0.0.1"));
            assert_eq!((verdict, counted), (Verdict::Admitted, None));
        }
        a.release(ip("192.0.2.1"));
        assert_eq!(a.admit(ip("192.0.2.1")).0, Verdict::Admitted);
        let strict = Admission::new(1, 100, 1, true);
        assert_eq!(strict.admit(ip("127.0.0.1")).0, Verdict::Admitted);
        assert_eq!(strict.admit(ip("127.0.0.1")).0, Verdict::TooManyFromIp);
        // Server full wins over nothing: the address is not counted for a refused connection.
        let full = Admission::new(1, 1, 5, false);
        assert_eq!(full.admit(ip("192.0.2.9")).0, Verdict::Admitted);
        assert_eq!(full.admit(ip("192.0.2.9")), (Verdict::ServerFull, None, 0));
        full.release(ip("192.0.2.9"));
        assert!(full.per_ip.lock().unwrap().is_empty());
    }
}
