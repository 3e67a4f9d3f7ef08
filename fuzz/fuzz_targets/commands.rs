//! Arbitrary bytes as a command line: parse + validate never panics, and every reply line the
//! server would send is valid JSON.
#![no_main]

use aerobridge::command::{parse_line, write_auth_ok, write_error, write_ok, ParseLimits, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut line = data.to_vec();
    let mut out = Vec::new();
    parse_line(&mut line, ParseLimits::default(), &mut out);
    for item in out {
        let mut reply = Vec::new();
        match item {
            Ok(Request::Command(c)) => {
                assert!(c.value.is_finite());
                assert!(c.name.access.is_writable());
                write_ok(&mut reply, &c, 1);
            }
            Ok(Request::Auth { id, .. }) => write_auth_ok(&mut reply, id.as_deref()),
            Err(r) => write_error(&mut reply, &r),
        }
        assert!(reply.ends_with(b"\n"));
        assert!(simd_json::to_borrowed_value(&mut reply).is_ok(), "reply is valid JSON");
    }
});
