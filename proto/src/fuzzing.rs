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
            let resp = switching_protocols(&req.accept, None, None);
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
        assert!(is_json(&reply), "reply is valid JSON");
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

/// A WebSocket session (telemetry or echo mode) driven by the input: a script of steps, each
/// `[op, len, bytes…]`: feed client bytes, let time pass and fire the timer, or answer the
/// pending batch (applied, failed, or never seen by the tick). Invariants: it never panics;
/// every text message it sends in telemetry mode is a JSON reply; a Close is the last action
/// it ever produces; it asks for the tick only with commands, and only one batch at a time.
pub fn session(data: &[u8]) {
    use crate::session::websocket::WsSession;
    use crate::session::Action;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let Some((&mode, mut script)) = data.split_first() else {
        return;
    };
    // Built once: parsing the defaults for every input would dominate the run.
    static BASE: std::sync::OnceLock<crate::session::Settings> = std::sync::OnceLock::new();
    let mut settings = BASE.get_or_init(crate::session::Settings::default).clone();
    settings.echo = mode & 1 == 1;
    settings.ws_max_message = 64 + (mode as usize >> 1) * 64;
    settings.access.rate_per_second = 1 + (mode as u32 >> 4);
    let echo = settings.echo;
    // Fresh v2 tables per input, and nothing parked: inputs must not affect one another.
    settings.v2 = crate::session::v2::V2Settings::new(
        crate::session::v2::V2Limits {
            resume_window: Duration::ZERO,
            ..settings.v2.limits
        },
        50.0,
        Arc::new(crate::session::v2::CountingIds::default()),
    );
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = WsSession::new(
        Arc::new(settings),
        None,
        Vec::new(),
        "127.0.0.1:9".parse().unwrap(),
        now,
        (mode >> 3) & 1 == 1,
        ((mode >> 2) & 1 == 1).then_some(crate::ws::deflate::Agreed {
            server_no_context_takeover: true,
            server_window_bits: 15,
        }),
    );
    let mut all: Vec<Action> = Vec::new();
    let mut submitted: Option<usize> = None;
    while let [op, len, rest @ ..] = script {
        let len = (*len as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        script = tail;
        let mut out = Vec::new();
        match op % 4 {
            0 => s.on_bytes(chunk, now, &mut out),
            1 => {
                now += Duration::from_millis(chunk.first().copied().unwrap_or(1) as u64 * 250);
                s.on_timeout(now, &mut out);
            }
            2 => {
                let result = scripted_result(submitted, chunk, *op);
                s.applied(result, op & 4 == 4, now, &mut out);
            }
            _ => s.applied(None, false, now, &mut out),
        }
        for a in &out {
            assert!(
                !all.iter().any(|a| matches!(a, Action::Close { .. })),
                "an action after the Close: {a:?}"
            );
            match a {
                Action::Submit(batch) => {
                    assert!(!echo, "echo mode submits nothing");
                    assert!(!batch.is_empty(), "empty batches stay off the tick");
                    submitted = Some(batch.len());
                }
                Action::Send { bytes, .. } if !echo && bytes[0] == 0x81 => {
                    let h = crate::ws::frame::decode_header(bytes).expect("a whole frame");
                    assert!(is_json(&bytes[h.header_len..]), "a reply that is not JSON");
                }
                _ => {}
            }
        }
        if !s.is_waiting() {
            submitted = None;
        }
        all.extend(out);
    }
}

/// A TCP data-port session driven by the input, as [`session`] drives a WebSocket one: feed
/// client bytes (v1 lines, a hello, v2 ops), fire the timer, answer the pending batch.
/// Invariants: it never panics; before the switch to v2 it sends nothing but errors about a
/// hello; every message it sends is one JSON value, framed as the connection's framing says
/// (a line, or a 4-byte length that matches); the switch happens at most once; a Close is last.
pub fn data_port(data: &[u8]) {
    use crate::packet::Framing;
    use crate::session::data_port::DataSession;
    use crate::session::v2::Clock;
    use crate::session::Action;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let Some((&mode, mut script)) = data.split_first() else {
        return;
    };
    static BASE: std::sync::OnceLock<crate::session::Settings> = std::sync::OnceLock::new();
    let mut settings = BASE.get_or_init(crate::session::Settings::default).clone();
    settings.ws_max_message = 64 + (mode as usize & 15) * 128;
    settings.access.rate_per_second = 1 + (mode as u32 >> 4);
    settings.v2 = crate::session::v2::V2Settings::new(
        crate::session::v2::V2Limits {
            resume_window: Duration::ZERO,
            max_subscriptions: 3,
            max_profiles: 4,
            ..settings.v2.limits
        },
        50.0,
        Arc::new(crate::session::v2::CountingIds::default()),
    );
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = DataSession::new(Arc::new(settings), "127.0.0.1:9".parse().unwrap(), now);
    let mut framing = Framing::Lines;
    let mut switched = false;
    let mut closed = false;
    let mut submitted: Option<usize> = None;
    while let [op, len, rest @ ..] = script {
        let len = (*len as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        script = tail;
        s.set_clock(Clock {
            wall_us: 1,
            seq: 2,
            last_sent: now,
        });
        let mut out = Vec::new();
        match op % 4 {
            0 => s.on_bytes(chunk, now, &mut out),
            1 => {
                now += Duration::from_millis(chunk.first().copied().unwrap_or(1) as u64 * 500);
                s.on_timeout(now, &mut out);
            }
            2 => {
                let result = scripted_result(submitted, chunk, *op);
                s.applied(result, op & 4 == 4, now, &mut out);
            }
            _ => s.applied(None, false, now, &mut out),
        }
        for a in &out {
            assert!(!closed, "an action after the Close: {a:?}");
            match a {
                Action::EnterV2(f) => {
                    assert!(!switched, "entered v2 twice");
                    switched = true;
                    framing = *f;
                }
                Action::Send { bytes, .. } => {
                    let json = match framing {
                        Framing::Length => {
                            let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                            assert_eq!(n + 4, bytes.len(), "length prefix");
                            &bytes[4..]
                        }
                        _ => {
                            assert_eq!(bytes.last(), Some(&b'\n'), "a line");
                            &bytes[..bytes.len() - 1]
                        }
                    };
                    assert!(
                        is_json(json),
                        "not JSON: {:?}",
                        String::from_utf8_lossy(json)
                    );
                    assert!(
                        switched || memchr::memmem::find(json, b"\"op\":\"error\"").is_some(),
                        "v1 data port sent something other than a hello error"
                    );
                }
                Action::Submit(batch) => {
                    assert!(switched, "v1 data port submitted commands");
                    assert!(!batch.is_empty());
                    submitted = Some(batch.len());
                }
                Action::Close { .. } => closed = true,
                _ => {}
            }
        }
        if !s.is_waiting() {
            submitted = None;
        }
    }
}

/// The tick's answer to a submitted batch of `n` commands as a fuzz script describes it: the
/// chunk's odd bytes refuse their command, bit 3 of the op says relayed.
fn scripted_result(
    submitted: Option<usize>,
    chunk: &[u8],
    op: u8,
) -> Option<crate::session::Applied> {
    submitted.map(|n| crate::session::Applied {
        frame: 1,
        results: (0..n)
            .map(|i| {
                if chunk.get(i).is_some_and(|b| b & 1 == 1) {
                    Err(crate::command::CommandError::Busy)
                } else {
                    Ok(())
                }
            })
            .collect(),
        relayed: op & 8 == 8,
    })
}

/// Whether `bytes` is one JSON value (simd-json, so the fuzz build needs no JSON dev-dependency).
fn is_json(bytes: &[u8]) -> bool {
    let mut b = bytes.to_vec();
    let ok = simd_json::to_borrowed_value(&mut b).is_ok();
    ok
}

/// An edge's feed rules driven by the input, 10 bytes a step: a stale tick, or a frame from one
/// of four origins (one without an id) with a counter, after a pause. The counters the edge's
/// clients see never repeat or go back; a frame that is used keeps its number (the origin's,
/// shifted only after a restart); the edge follows one origin at a time.
pub fn feed(data: &[u8]) {
    use crate::feed::{FeedCounters, OriginTracker, OriginVerdict, TAKEOVER_AFTER};
    use std::time::{Duration, Instant};

    let mut origins = OriginTracker::default();
    let mut numbers = FeedCounters::default();
    let mut epoch = 0u64;
    let mut now = Instant::now();
    let mut followed: Option<(&str, Instant)> = None;
    let mut last = 0u64;
    for step in data.chunks_exact(10) {
        now += Duration::from_millis(step[1] as u64 * 8);
        if step[0] % 3 == 0 {
            let counter = numbers.emit(None);
            assert!(counter > last || last == u64::MAX, "stale frames count on");
            last = counter;
            continue;
        }
        let origin = ["a", "b", "c", ""][(step[0] / 3 % 4) as usize];
        let upstream = u64::from_le_bytes(step[2..10].try_into().expect("8 bytes"));
        match origins.judge(origin, now) {
            OriginVerdict::Conflict { followed: f } => {
                let (id, since) = followed.expect("a conflict needs a followed origin");
                assert_eq!(f, id);
                assert!(now.duration_since(since) < TAKEOVER_AFTER);
                continue;
            }
            OriginVerdict::Switch { previous } => {
                if let Some((id, since)) = followed {
                    assert_eq!(previous.as_deref(), Some(id));
                    assert!(
                        id == origin || now.duration_since(since) >= TAKEOVER_AFTER,
                        "another origin only after the followed one went silent"
                    );
                }
                epoch += 1;
            }
            OriginVerdict::Follow => {
                assert_eq!(followed.map(|f| f.0), Some(origin));
            }
        }
        followed = Some((origin, now));
        let offset = numbers.offset();
        if let Some(placed) = numbers.place(epoch, upstream) {
            assert!(
                placed > last,
                "a placed frame is newer than every frame sent"
            );
            if numbers.offset() == offset {
                assert_eq!(placed, upstream.saturating_add(offset));
            }
            assert_eq!(numbers.emit(Some(placed)), placed, "it keeps its number");
            last = placed;
        }
    }
}

/// The configurations [`tls_session`] runs with: a server with `cert`/`key` and a client that
/// trusts `cert`, both on `provider` (the caller's: this crate names none).
pub fn tls_configs(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    cert: Vec<u8>,
    key: Vec<u8>,
) -> (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = CertificateDer::from(cert);
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("a usable test certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a usable test certificate");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (std::sync::Arc::new(server), std::sync::Arc::new(client))
}

/// The TLS-facing glue: a [`crate::tls::TlsLayer`] whose plaintext drives a WebSocket session
/// (upgrade, messages, commands), as the shell wires them. The first byte picks raw mode (the
/// rest is fed to the layer as it is: garbage, truncated records) or a real rustls client doing
/// the handshake; then a script of `[op, len, bytes…]` steps: the client writes plaintext, the
/// server seals a packet, a send moves part of the output buffer (lend, advance, give back),
/// a byte of the client's records is flipped or foreign bytes are injected, either side closes.
/// Invariants: nothing panics; a failed layer stays failed; without tampering, each side reads
/// exactly what the other wrote, in order, and the server never fails; the output buffer only
/// holds what was sealed and not yet sent.
pub fn tls_session(
    data: &[u8],
    server: std::sync::Arc<rustls::ServerConfig>,
    client: std::sync::Arc<rustls::ClientConfig>,
) {
    use crate::session::Session;
    use crate::tls::TlsLayer;
    use std::io::{Read, Write};
    use std::time::Instant;

    let Some((&mode, mut script)) = data.split_first() else {
        return;
    };
    let mut layer = TlsLayer::new(server).expect("a server connection");
    let now = Instant::now();
    static BASE: std::sync::OnceLock<crate::session::Settings> = std::sync::OnceLock::new();
    let settings = std::sync::Arc::new(BASE.get_or_init(crate::session::Settings::default).clone());
    let mut session =
        crate::session::websocket::WsConnection::new(settings, "127.0.0.1:9".parse().unwrap(), now);
    let mut plain = Vec::new();
    // Raw mode: the bytes as they come, in two pieces.
    if mode & 1 == 0 {
        let (a, b) = script.split_at(script.len() / 2);
        for part in [a, b] {
            let before = layer.failure();
            match layer.receive(part, &mut plain) {
                Ok(_) => assert!(before.is_none(), "a failed layer took input"),
                Err(f) => assert_eq!(layer.failure(), Some(f)),
            }
        }
        return;
    }
    let mut peer = rustls::ClientConnection::new(client, "localhost".try_into().unwrap())
        .expect("a client connection");
    let mut tampered = false;
    let mut sent_by_client = Vec::new();
    let mut sealed = Vec::new();
    let mut read_by_client = Vec::new();
    let mut received_by_server = Vec::new();
    let mut client_closed = false;
    // Moves the client's pending records to the server (optionally in small pieces).
    let client_to_server = |peer: &mut rustls::ClientConnection,
                            layer: &mut TlsLayer,
                            plain: &mut Vec<u8>,
                            piece: usize,
                            flip: Option<usize>| {
        let mut wire = Vec::new();
        while peer.wants_write() {
            peer.write_tls(&mut wire).expect("vec write");
        }
        if let Some(at) = flip {
            if !wire.is_empty() {
                let i = at % wire.len();
                wire[i] ^= 0x5a;
            }
        }
        for chunk in wire.chunks(piece.max(1)) {
            if layer.receive(chunk, plain).is_err() {
                return;
            }
        }
    };
    // Moves up to `limit` bytes of the server's output to the client.
    let server_to_client = |peer: &mut rustls::ClientConnection,
                            layer: &mut TlsLayer,
                            read: &mut Vec<u8>,
                            limit: usize| {
        let Some(mut out) = layer.lend() else {
            return;
        };
        let n = out.pending().len().min(limit);
        let mut bytes = &out.pending()[..n];
        let mut ok = true;
        while !bytes.is_empty() && ok {
            // `Ok(0)`: the client has seen close_notify and takes nothing more.
            ok = matches!(peer.read_tls(&mut bytes), Ok(n) if n > 0)
                && peer.process_new_packets().is_ok();
            let _ = peer.reader().read_to_end(read);
        }
        out.advance(n);
        layer.give_back(out);
    };
    // The handshake.
    for _ in 0..6 {
        client_to_server(&mut peer, &mut layer, &mut plain, 4096, None);
        server_to_client(&mut peer, &mut layer, &mut read_by_client, usize::MAX);
    }
    while let [op, len, rest @ ..] = script {
        let len = (*len as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        script = tail;
        match op % 8 {
            0 => {
                // Data after the client's own close_notify is not the server's to read.
                if peer.writer().write_all(chunk).is_ok() && !client_closed {
                    sent_by_client.extend_from_slice(chunk);
                }
                client_to_server(
                    &mut peer,
                    &mut layer,
                    &mut plain,
                    1 + (*op as usize >> 3),
                    None,
                );
            }
            1 => {
                if layer.encrypt(chunk).is_ok() {
                    sealed.extend_from_slice(chunk);
                }
            }
            2 => {
                let limit = chunk.first().map_or(usize::MAX, |&b| b as usize * 7 + 1);
                server_to_client(&mut peer, &mut layer, &mut read_by_client, limit);
            }
            3 => {
                let _ = peer.writer().write_all(chunk);
                tampered = true;
                client_to_server(&mut peer, &mut layer, &mut plain, 64, Some(*op as usize));
            }
            4 => {
                tampered = true;
                let _ = layer.receive(chunk, &mut plain);
            }
            5 => layer.close_notify(),
            6 => {
                client_closed = true;
                peer.send_close_notify();
                client_to_server(&mut peer, &mut layer, &mut plain, 4096, None);
            }
            _ => layer.shrink_if_idle(0),
        }
        // The glue: plaintext goes to the session; what it answers is sealed for the client.
        if !plain.is_empty() {
            received_by_server.extend_from_slice(&plain);
            session.receive(&plain, now);
            plain.clear();
            while let Some(action) = session.poll_action() {
                let bytes = match action {
                    crate::session::Action::Send { bytes, .. }
                    | crate::session::Action::Respond { bytes, .. } => bytes,
                    _ => continue,
                };
                if layer.encrypt(&bytes).is_ok() {
                    sealed.extend_from_slice(&bytes);
                }
            }
        }
        if layer.failure().is_some() {
            assert!(layer.encrypt(b"x").is_err(), "a failed layer sealed data");
        }
    }
    if !tampered && !peer.is_handshaking() {
        assert!(
            layer.failure().is_none(),
            "an honest peer failed the server: {:?}",
            layer.failure()
        );
        server_to_client(&mut peer, &mut layer, &mut read_by_client, usize::MAX);
        assert!(
            sealed.starts_with(&read_by_client),
            "the client read something the server did not seal, or out of order"
        );
        assert_eq!(
            received_by_server, sent_by_client,
            "the server read other bytes than were sent"
        );
    }
}
