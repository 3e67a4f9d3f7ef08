//! Publishing one tick to every client: the hub (tick thread), the workers (compio runtime
//! threads, each owning a share of the clients), the per-client queue, and the counters.

pub mod connections;
pub mod hub;
pub mod notify;
pub mod queue;
pub mod stats;
pub mod worker;
