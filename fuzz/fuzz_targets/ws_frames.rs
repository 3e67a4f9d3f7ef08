//! Client bytes → WebSocket reader (frames, fragmentation, UTF-8 state, limits), delivered in
//! chunks whose sizes come from the input, the way a socket delivers them.
#![no_main]

use aerobridge::ws::{Event, MessageReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 64 + (data[0] as usize) * 16;
    let step = 1 + data[1] as usize;
    let bytes = &data[2..];
    let mut reader = MessageReader::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    'outer: while fed < bytes.len() {
        let end = (fed + step).min(bytes.len());
        buf.extend_from_slice(&bytes[fed..end]);
        fed = end;
        loop {
            match reader.decode(&mut buf) {
                Ok(Some((n, event))) => {
                    assert!(n > 0 && n <= buf.len());
                    buf.drain(..n);
                    match event {
                        Some(Event::Text(t)) => {
                            assert!(std::str::from_utf8(&t).is_ok(), "text events are UTF-8");
                            assert!(t.len() <= max);
                        }
                        Some(Event::Binary(b)) => assert!(b.len() <= max),
                        Some(Event::Ping(p)) | Some(Event::Pong(p)) => assert!(p.len() <= 125),
                        Some(Event::Close(code, _)) => {
                            assert!(code.is_none_or(aerobridge::ws::close::is_valid_received));
                            break 'outer;
                        }
                        None => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = (e.close_code(), e.to_string());
                    break 'outer;
                }
            }
        }
    }
});
