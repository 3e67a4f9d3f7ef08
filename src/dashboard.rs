//! The live dashboard served at `GET /` on the WebSocket port: one self-contained HTML page (no
//! CDN, no build step) that connects back to the same port, shows attitude, altitude, airspeed,
//! heading, vertical speed, the track, connection state and frame rate, and sends throttle, flaps
//! and gear commands with ids so it gets (and shows) each reply. It reconnects by itself.

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// The JavaScript client library (`clients/js`), served at `/aerobridge-client.js`: the
/// dashboard speaks v2 through it, like any other page would.
pub const CLIENT_LIBRARY: &str = include_str!("../clients/js/aerobridge-client.js");

/// The icon (`GET /favicon.ico`, and inline in the page): a plane on a blue disc.
pub const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="#1d4ed8"/><path fill="#fff" d="M16 4l2 9 9 4v2l-9-2-1 6 3 2v2l-4-1-4 1v-2l3-2-1-6-9 2v-2l9-4z"/></svg>"##;
