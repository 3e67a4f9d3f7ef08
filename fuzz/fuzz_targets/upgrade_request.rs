//! Arbitrary bytes as an HTTP upgrade request: never panics, answers are well-formed.
#![no_main]

use aerobridge::ws::handshake::{parse_upgrade, switching_protocols};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_upgrade(data, 8192) {
        Ok(Some((req, len))) => {
            assert!(len <= data.len());
            assert_eq!(req.accept.len(), 28);
            let resp = switching_protocols(&req.accept);
            assert!(resp.starts_with(b"HTTP/1.1 101 "));
            let _ = aerobridge::access::presented_token(req.authorization.as_deref(), &req.target);
            let _ = aerobridge::access::origin_allowed(req.origin.as_deref(), req.host.as_deref(), &[]);
        }
        Ok(None) => assert!(data.len() < 8192),
        Err(e) => {
            let resp = e.response();
            assert!(resp.starts_with(b"HTTP/1.1 4"));
        }
    }
});
