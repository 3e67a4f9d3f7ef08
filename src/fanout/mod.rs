//! Publishing one tick to every client: the hub (tick thread), the workers (compio runtime
//! threads, each owning a share of the clients), the per-client queue, and the counters.

pub mod connections;
pub mod hub;
pub mod notify;
pub mod stats;
pub mod worker;

/// The per-client send queue (the slow-consumer policy) performs no I/O: it lives in the protocol
/// core.
pub use aerobridge_proto::queue;
