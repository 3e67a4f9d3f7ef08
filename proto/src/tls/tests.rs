//! The layer against a real rustls client, in memory.

use super::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};

struct Pki {
    server: Arc<ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pki(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// Moves bytes between the layer and the client until neither has anything to say.
fn exchange(layer: &mut TlsLayer, client: &mut rustls::ClientConnection, plain: &mut Vec<u8>) {
    for _ in 0..10 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            layer.receive(&to_server, plain).unwrap();
        }
        if let Some(out) = layer.lend() {
            let bytes = out.pending().to_vec();
            let mut out = out;
            out.advance(bytes.len());
            layer.give_back(out);
            let mut slice = &bytes[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
            }
            client.process_new_packets().unwrap();
        } else if to_server.is_empty() {
            return;
        }
    }
}

fn connected(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsLayer, rustls::ClientConnection) {
    let pki = pki(versions);
    let mut layer = TlsLayer::new(pki.server).unwrap();
    let mut client =
        rustls::ClientConnection::new(pki.client, ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut plain = Vec::new();
    exchange(&mut layer, &mut client, &mut plain);
    assert!(!layer.is_handshaking());
    assert!(!client.is_handshaking());
    (layer, client)
}

fn read_all(client: &mut rustls::ClientConnection, bytes: &[u8]) -> Vec<u8> {
    let mut slice = bytes;
    let mut got = Vec::new();
    while !slice.is_empty() {
        client.read_tls(&mut slice).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    got
}

#[test]
fn both_versions_handshake_and_carry_data_both_ways() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (mut layer, mut client) = connected(versions);
        let n = layer.negotiated().unwrap();
        assert_eq!(
            n.version,
            if versions[0] == &rustls::version::TLS13 {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            }
        );
        assert!(n.client_certificate.is_none());

        // Server to client: a 40 KiB packet (three records).
        let packet: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        layer.encrypt(&packet).unwrap();
        let out = layer.lend().unwrap();
        let got = read_all(&mut client, out.pending());
        assert_eq!(got, packet);

        // Client to server, split at every byte boundary of its record.
        let mut out = out;
        out.advance(out.pending().len());
        layer.give_back(out);
        client.writer().write_all(b"{\"variable\":1}\n").unwrap();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let mut plain = Vec::new();
        for byte in wire {
            layer.receive(&[byte], &mut plain).unwrap();
        }
        assert_eq!(plain, b"{\"variable\":1}\n");
    }
}

#[test]
fn records_written_while_the_buffer_is_lent_follow_what_it_had_not_sent() {
    let (mut layer, mut client) = connected(&[&rustls::version::TLS13]);
    layer.encrypt(b"first").unwrap();
    let mut lent = layer.lend().unwrap();
    assert!(layer.lend().is_none(), "one send at a time");
    // Half of the first record goes out, then a second record is sealed meanwhile.
    let half = lent.pending().len() / 2;
    let mut wire = lent.pending()[..half].to_vec();
    lent.advance(half);
    layer.encrypt(b"second").unwrap();
    layer.give_back(lent);
    let rest = layer.lend().unwrap();
    wire.extend_from_slice(rest.pending());
    assert_eq!(read_all(&mut client, &wire), b"firstsecond");
}

#[test]
fn close_notify_ends_the_stream_cleanly() {
    let (mut layer, mut client) = connected(&[&rustls::version::TLS13]);
    layer.close_notify();
    layer.close_notify(); // once only
    layer.encrypt(b"after the end").unwrap(); // dropped: nothing follows close_notify
    let out = layer.lend().unwrap();
    let mut slice = out.pending();
    client.read_tls(&mut slice).unwrap();
    let state = client.process_new_packets().unwrap();
    assert!(state.peer_has_closed());

    // And the peer's close_notify is seen.
    client.send_close_notify();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let got = layer.receive(&wire, &mut Vec::new()).unwrap();
    assert!(got.peer_closed);
}

#[test]
fn plaintext_and_garbage_fail_with_their_own_reason_and_an_alert() {
    let pki = pki(&[&rustls::version::TLS13]);
    for (input, want) in [
        (
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            TlsFailure::Plaintext,
        ),
        (
            &b"{\"variable\": \"Controls.Throttle\"}\n"[..],
            TlsFailure::Plaintext,
        ),
        (
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            TlsFailure::Malformed,
        ),
        (
            &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06][..],
            TlsFailure::Malformed,
        ),
    ] {
        let mut layer = TlsLayer::new(Arc::clone(&pki.server)).unwrap();
        let err = layer.receive(input, &mut Vec::new()).unwrap_err();
        assert_eq!(err, want, "input {input:?}");
        let alert = layer.lend().expect("an alert for the peer");
        assert_eq!(alert.pending()[0], 0x15, "an alert record");
        assert_eq!(layer.failure(), Some(want));
        assert_eq!(
            layer.receive(b"more", &mut Vec::new()),
            Err(want),
            "stays failed"
        );
    }
}

#[test]
fn a_record_longer_than_tls_allows_is_refused() {
    let pki = pki(&[&rustls::version::TLS13]);
    let mut layer = TlsLayer::new(pki.server).unwrap();
    // A handshake record header announcing 60 000 bytes, then that many bytes.
    let mut record = vec![0x16, 0x03, 0x01, 0xea, 0x60];
    record.extend(std::iter::repeat_n(0u8, 60_000));
    let mut failed = None;
    for chunk in record.chunks(4096) {
        if let Err(e) = layer.receive(chunk, &mut Vec::new()) {
            failed = Some(e);
            break;
        }
    }
    assert_eq!(failed, Some(TlsFailure::Malformed));
}

#[test]
fn the_handshake_budget_holds_its_share_whatever_a_step_costs() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut b = HandshakeBudget::new(ms(20), ms(5)); // a quarter of the time
    assert!(b.may_run(t0).is_ok());
    b.spent(ms(3));
    assert!(
        b.may_run(t0 + ms(1)).is_ok(),
        "under one window's allowance"
    );
    b.spent(ms(3));
    let retry = b.may_run(t0 + ms(2)).unwrap_err();
    assert!(
        retry > t0 + ms(2) && retry <= t0 + ms(10),
        "{:?}",
        retry - t0
    );
    assert!(b.may_run(retry).is_ok());

    // One step dearer than the allowance (40 ms: an RSA key in a debug build) is paid for by
    // the windows after it: the next step waits until the share is back.
    let mut b = HandshakeBudget::new(ms(20), ms(5));
    assert!(b.may_run(t0).is_ok());
    b.spent(ms(40));
    let retry = b.may_run(t0 + ms(40)).unwrap_err();
    // 40 ms of debt, 10 ms paid by then; at a quarter it drains to 5 ms 100 ms later.
    assert!(
        retry >= t0 + ms(139) && retry <= t0 + ms(141),
        "{:?}",
        retry - t0
    );
}

#[test]
fn a_key_update_from_the_client_is_answered_in_order_and_traffic_goes_on() {
    let (mut layer, mut client) = connected(&[&rustls::version::TLS13]);
    // rustls asks the peer to update too (update_requested), so the layer owes a KeyUpdate.
    client.refresh_traffic_keys().unwrap();
    client.writer().write_all(b"after the update").unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let mut plain = Vec::new();
    layer.receive(&wire, &mut plain).unwrap();
    assert_eq!(plain, b"after the update");
    // The answer (if any) and then a frame, sealed under the new keys, in order.
    layer.encrypt(b"a frame").unwrap();
    let out = layer.lend().unwrap();
    assert_eq!(read_all(&mut client, out.pending()), b"a frame");
}
