//! The live dashboard served at `GET /` on the WebSocket port: one self-contained HTML page (no
//! CDN, no build step) that connects back to the same port, shows attitude, altitude, airspeed,
//! heading, vertical speed, the track, connection state and frame rate, and sends throttle, flaps
//! and gear commands with ids so it gets (and shows) each reply. It reconnects by itself.

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");
