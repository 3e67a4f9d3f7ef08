//! The fuzz targets' bodies, shared by `fuzz/` (libFuzzer) and `tests/fuzz_regressions.rs`
//! (every seed and every input that ever crashed, replayed on each test run). Each panics on
//! a broken invariant.

/// Client bytes → WebSocket reader (frames, fragmentation, UTF-8 state, limits), delivered in chunks whose sizes come from the input, the way a socket delivers them.
pub fn ws_frames(data: &[u8]) {
    use crate::ws::{Event, MessageReader};

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
                            assert!(code.is_none_or(crate::ws::close::is_valid_received));
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
}

/// Arbitrary bytes as an HTTP upgrade request: never panics, answers are well-formed.
pub fn upgrade_request(data: &[u8]) {
    use crate::ws::handshake::{parse_upgrade, switching_protocols};

    match parse_upgrade(data, 8192) {
        Ok(Some((req, len))) => {
            assert!(len <= data.len());
            assert_eq!(req.accept.len(), 28);
            let resp = switching_protocols(&req.accept);
            assert!(resp.starts_with(b"HTTP/1.1 101 "));
            let _ = crate::access::presented_token(req.authorization.as_deref(), &req.target);
            let _ = crate::access::origin_allowed(req.origin.as_deref(), req.host.as_deref(), &[]);
        }
        Ok(None) => assert!(data.len() < 8192),
        Err(e) => {
            let resp = e.response();
            assert!(resp.starts_with(b"HTTP/1.1 4"));
        }
    }
}

/// Arbitrary bytes as a command line: parse + validate never panics, and every reply line the server would send is valid JSON.
pub fn commands(data: &[u8]) {
    use crate::command::{parse_line, write_auth_ok, write_error, write_ok, ParseLimits, Request};

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
        assert!(
            simd_json::to_borrowed_value(&mut reply).is_ok(),
            "reply is valid JSON"
        );
    }
}

/// The TCP line splitter with input-controlled chunking: lines never exceed the limit, never contain `\n`, and no byte is invented.
pub fn line_splitter(data: &[u8]) {
    use crate::command::{Line, LineSplitter};

    if data.len() < 2 {
        return;
    }
    let max = 1 + data[0] as usize;
    let step = 1 + data[1] as usize;
    let bytes = &data[2..];
    let mut s = LineSplitter::new(max);
    let mut out_bytes = 0usize;
    let mut check = |line: Line<'_>| {
        if let Line::Text(t) = line {
            assert!(t.len() <= max, "line over the limit");
            assert!(!t.contains(&b'\n'));
            out_bytes += t.len();
        }
    };
    for chunk in bytes.chunks(step) {
        s.extend(chunk);
        while let Some(line) = s.next_line() {
            check(line);
        }
    }
    if let Some(line) = s.finish() {
        check(line);
    }
    assert!(out_bytes <= bytes.len());
}
