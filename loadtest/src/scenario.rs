//! Scenario presets: documented client counts, rates and durations, so runs are comparable.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A named preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 100 TCP + 100 WebSocket clients, 50 Hz, 5 s. CI's crash/gap/torn-frame check.
    Smoke,
    /// 250 TCP + 250 WebSocket clients, 50 Hz, 10 s, with --calibrate. The regression gate.
    Ci,
    /// 5 000 WebSocket clients at 10 Hz, 100 of them stalled, 30 s.
    Stress,
    /// 10 000 TCP clients that never read (4 KiB receive buffers) held for the whole window
    /// beside 20 TCP + 20 WebSocket healthy clients at 50 Hz, 10 s: server threads, kernel TCP
    /// memory, RSS, healthy latency.
    StallFlood,
    /// Session protocol v2: 300 clients over 18 profiles (three variable sets, 10/25/50 Hz, full
    /// and delta; WebSocket and TCP) beside 20 v1 TCP clients, 5 s. Every rebuilt state is
    /// checked against the v1 frame of the same update_counter.
    V2,
    /// Fair admission: 500 TCP + 500 WebSocket healthy clients at 50 Hz; during the 10 s window
    /// 10 000 connections to the data port are offered at 10 000/s (4 KiB receive buffers,
    /// never read) and held. Healthy clients must lose nothing; the report says how fast the
    /// server took the flood on (the target: at least 5 000/s).
    Flood,
    /// 5 000 v2 clients at 10 Hz over 6 profiles (three variable sets, full and delta; WebSocket
    /// and TCP) beside 20 v1 TCP clients,
    /// 20 s.
    V2Stress,
}

/// Which transport slow and stalled clients use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Laggards {
    /// WebSocket if there are healthy WebSocket clients, else TCP.
    #[default]
    Auto,
    /// The TCP telemetry port.
    Tcp,
    /// WebSocket.
    Ws,
}

/// What one run does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Healthy TCP clients.
    pub tcp: usize,
    /// Healthy WebSocket clients.
    pub ws: usize,
    /// Clients that read at `slow_rate` bytes/s.
    pub slow: usize,
    /// Clients that connect and never read.
    pub stalled: usize,
    /// Throttled read rate of slow clients, bytes per second.
    pub slow_rate: u64,
    /// New connections per second during the ramp.
    pub connect_rate: u64,
    /// Measurement window.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Time between the last connection and the start of the window.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Broadcast period for a spawned server or the floor, in ms.
    pub broadcast_ms: u64,
    /// Fraction of frames fully validated with simd-json (0..=1).
    pub validate_rate: f64,
    /// Commands per second (0: none).
    pub command_rate: f64,
    /// Client threads.
    pub threads: usize,
    /// Transport of slow and stalled clients.
    #[serde(default)]
    pub laggards: Laggards,
    /// Receive buffer (SO_RCVBUF) of slow and stalled clients, bytes.
    #[serde(default = "default_laggard_rcvbuf")]
    pub laggard_rcvbuf: usize,
    /// Extra arguments for a spawned server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_args: Vec<String>,
    /// Session protocol v2 clients (each verifies what it rebuilds against a v1 reference).
    #[serde(default)]
    pub v2: usize,
    /// v2 variable sets (names or `Prefix.*`; empty set: every variable); clients take every
    /// combination of set, rate and mode in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v2_vars: Vec<Vec<String>>,
    /// v2 rates, Hz (empty: the broadcast rate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v2_hz: Vec<f64>,
    /// v2 modes: `full`, `delta`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v2_mode: Vec<String>,
    /// Transport of v2 clients.
    #[serde(default)]
    pub v2_transport: V2Transport,
    /// WebSocket clients negotiate permessage-deflate and inflate (and verify) every message.
    #[serde(default)]
    pub deflate: bool,
    /// New WebSocket connections per second during the window, each closed once upgraded
    /// (`--churn`): what accepting clients (their TLS handshakes) costs the streaming ones.
    #[serde(default)]
    pub churn: f64,
    /// Every connection speaks TLS (`--tls`).
    #[serde(default)]
    pub tls: bool,
    /// Connections to the data port opened during the window, never reading (`--flood`).
    #[serde(default)]
    pub flood: usize,
    /// Their pace, connections per second (`--flood-rate`).
    #[serde(default)]
    pub flood_rate: f64,
    /// The floor (`--calibrate`) serves over TLS too: a rustls stream per client.
    #[serde(default)]
    pub floor_tls: bool,
}

/// Which transport v2 clients use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum V2Transport {
    /// WebSocket with the subprotocol `aerobridge.v2`.
    #[default]
    Ws,
    /// The TCP data port with an in-band hello.
    Tcp,
    /// Half and half.
    Mix,
}

impl Plan {
    /// The profile of v2 client `i`: every combination of set, rate and mode in turn.
    pub fn v2_profile(&self, i: usize) -> crate::model::Profile {
        let sets = self.v2_vars.len().max(1);
        let rates = self.v2_hz.len().max(1);
        let modes = self.v2_mode.len().max(1);
        crate::model::Profile {
            vars: self.v2_vars.get(i % sets).cloned().unwrap_or_default(),
            hz: self.v2_hz.get(i / sets % rates).copied(),
            mode: self
                .v2_mode
                .get(i / sets / rates % modes)
                .cloned()
                .unwrap_or_else(|| "delta".into()),
        }
    }

    /// Distinct profiles the v2 clients ask for.
    pub fn v2_profiles(&self) -> usize {
        if self.v2 == 0 {
            return 0;
        }
        let combos =
            self.v2_vars.len().max(1) * self.v2_hz.len().max(1) * self.v2_mode.len().max(1);
        combos.min(self.v2)
    }
}

fn default_laggard_rcvbuf() -> usize {
    16 * 1024
}

impl Scenario {
    /// The preset's plan.
    pub fn plan(self) -> Plan {
        let base = Plan {
            tcp: 0,
            ws: 0,
            slow: 0,
            stalled: 0,
            slow_rate: 20_000,
            connect_rate: 1_000,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            broadcast_ms: 20,
            validate_rate: 1.0,
            command_rate: 0.0,
            threads: default_threads(),
            laggards: Laggards::Auto,
            laggard_rcvbuf: default_laggard_rcvbuf(),
            server_args: Vec::new(),
            v2: 0,
            v2_vars: Vec::new(),
            v2_hz: Vec::new(),
            v2_mode: Vec::new(),
            v2_transport: V2Transport::Ws,
            deflate: false,
            churn: 0.0,
            tls: false,
            floor_tls: false,
            flood: 0,
            flood_rate: 5_000.0,
        };
        match self {
            Scenario::Smoke => Plan {
                tcp: 100,
                ws: 100,
                duration: Duration::from_secs(5),
                command_rate: 5.0,
                ..base
            },
            Scenario::Ci => Plan {
                tcp: 250,
                ws: 250,
                validate_rate: 0.1,
                ..base
            },
            Scenario::Stress => Plan {
                ws: 5_000,
                stalled: 100,
                broadcast_ms: 100,
                duration: Duration::from_secs(30),
                warmup: Duration::from_secs(2),
                validate_rate: 0.05,
                ..base
            },
            Scenario::V2 => Plan {
                tcp: 20,
                v2: 300,
                v2_vars: v2_sets(),
                v2_hz: vec![10.0, 25.0, 50.0],
                v2_mode: vec!["delta".into(), "full".into()],
                v2_transport: V2Transport::Mix,
                duration: Duration::from_secs(5),
                ..base
            },
            Scenario::V2Stress => Plan {
                tcp: 20,
                v2: 5_000,
                v2_vars: v2_sets(),
                v2_hz: vec![10.0],
                v2_mode: vec!["delta".into(), "full".into()],
                v2_transport: V2Transport::Mix,
                connect_rate: 2_000,
                duration: Duration::from_secs(20),
                warmup: Duration::from_secs(2),
                ..base
            },
            Scenario::Flood => Plan {
                tcp: 500,
                ws: 500,
                flood: 10_000,
                flood_rate: 10_000.0,
                connect_rate: 2_000,
                warmup: Duration::from_secs(2),
                validate_rate: 0.05,
                // The flood stays stalled for the whole window; --max-lag would cut it off.
                server_args: vec!["--max-lag".into(), "30s".into()],
                ..base
            },
            Scenario::StallFlood => Plan {
                tcp: 20,
                ws: 20,
                stalled: 10_000,
                laggards: Laggards::Tcp,
                laggard_rcvbuf: 4096,
                connect_rate: 2_000,
                warmup: Duration::from_secs(2),
                validate_rate: 0.2,
                // Keep every stalled client stalled through the window (the worst case for
                // threads and kernel memory); the integration test covers their disconnection.
                server_args: vec!["--max-lag".into(), "30s".into()],
                ..base
            },
        }
    }
}

/// Variable sets of the v2 presets: everything; one group; a handful across groups.
fn v2_sets() -> Vec<Vec<String>> {
    vec![
        Vec::new(),
        vec!["Aircraft.*".into()],
        vec![
            "Aircraft.Altitude".into(),
            "Aircraft.IndicatedAirspeed".into(),
            "Aircraft.Pitch".into(),
            "Aircraft.Bank".into(),
            "Controls.*".into(),
        ],
    ]
}

/// Client threads by default: the available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}
