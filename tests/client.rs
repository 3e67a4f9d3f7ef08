//! The Rust client crate (`aerobridge-client`, the one frame loop loadtest uses too) against the
//! real server: v1 over TCP and WebSocket (with permessage-deflate), and a v2 session that
//! subscribes, rebuilds its state from keyframes and deltas, and sets a value with an ack.

mod common;

use aerobridge_client::blocking::{Connection, Received};
use aerobridge_client::v2::{self, Event, V2State, Value};
use common::*;
use std::time::Duration;

fn text(c: &mut Connection) -> Vec<u8> {
    match c.recv().expect("a message") {
        Received::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn v1_frames_over_tcp_and_websocket_with_deflate_are_whole_and_consecutive() {
    let server = Server::start(&[]);
    let mut tcp = Connection::connect(&format!("tcp://{}", server.data), "").unwrap();
    let mut ws = Connection::connect(
        &format!("ws://{}/", server.ws()),
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .unwrap();
    assert!(ws.upgraded.as_ref().unwrap().deflate, "deflate agreed");
    for c in [&mut tcp, &mut ws] {
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut last = None;
        for _ in 0..60 {
            let frame = text(c);
            assert!(frame.ends_with(b"}\n"));
            let counter = counter_of(&frame);
            if let Some(l) = last {
                assert_eq!(counter, l + 1, "consecutive");
            }
            last = Some(counter);
        }
    }
}

#[test]
fn a_v2_session_rebuilds_the_v1_values_and_sets_with_an_ack() {
    let server = Server::start(&[]);
    let mut c = Connection::connect(
        &format!("ws://{}/", server.ws()),
        "Sec-WebSocket-Protocol: aerobridge.v2\r\n",
    )
    .unwrap();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut state = V2State::default();
    assert!(matches!(
        state.on_message(&mut text(&mut c)).unwrap(),
        Event::Welcome { .. }
    ));
    c.send_text(&v2::sub(
        1,
        &["Aircraft.Altitude", "Controls.Flaps", "Aircraft.Name"],
        Some(25.0),
        true,
    ))
    .unwrap();
    let mut keys = 0;
    let mut deltas = 0;
    let mut profile = None;
    while keys == 0 || deltas < 5 {
        match state.on_message(&mut text(&mut c)).unwrap() {
            Event::Subscribed {
                profile: p, every, ..
            } => {
                assert_eq!(every, 2);
                profile = Some(p);
            }
            Event::Data { key, .. } => {
                if key {
                    keys += 1
                } else {
                    deltas += 1
                }
            }
            Event::BrokenChain { .. } => panic!("the keyframe comes before its deltas"),
            _ => {}
        }
    }
    let p = &state.profiles[&profile.unwrap()];
    assert_eq!(
        p.names,
        ["Aircraft.Altitude", "Controls.Flaps", "Aircraft.Name"],
        "wire order"
    );
    assert!(matches!(p.values[2], Value::Text(ref name) if !name.is_empty()));
    c.send_text(&v2::set(9, &[("Controls.Flaps", 0.5)]))
        .unwrap();
    let frame = loop {
        if let Event::Ack { id, ok, frame, .. } = state.on_message(&mut text(&mut c)).unwrap() {
            assert_eq!(id.as_deref(), Some("9"));
            assert!(ok);
            break frame.expect("the frame that shows it");
        }
    };
    // The rebuilt state shows the value from that frame on.
    loop {
        if let Event::Data { seq, .. } = state.on_message(&mut text(&mut c)).unwrap() {
            if seq >= frame {
                assert_eq!(state.profiles[&profile.unwrap()].values[1], Value::Num(0.5));
                break;
            }
        }
    }
}

#[test]
fn length_framing_on_the_data_port_after_the_v1_lines() {
    let server = Server::start(&[]);
    let mut c = Connection::connect(&format!("tcp://{}", server.data), "").unwrap();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c.send_text(&v2::hello("client-test", None, true)).unwrap();
    c.expect_length();
    let mut state = V2State::default();
    let session = loop {
        match state.on_message(&mut text(&mut c)).unwrap() {
            Event::V1Frame => continue, // the frames on their way before the switch
            Event::Welcome { session, .. } => break session,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(session.len(), 32);
    c.send_text(&v2::sub(1, &["Aircraft.Altitude"], Some(10.0), false))
        .unwrap();
    loop {
        if let Event::Data { key: true, .. } = state.on_message(&mut text(&mut c)).unwrap() {
            break;
        }
    }
}
