//! `aerobridge echo`: the same WebSocket path, messages echoed (what Autobahn drives).

use aerobridge::net::ListenerKind;
use std::path::Path;
use tungstenite::Message;

#[test]
fn echo_mode_sends_text_and_binary_back_and_serves_no_telemetry() {
    let (mut echo, ports) = aerobridge_harness::spawn_aerobridge(
        Path::new(env!("CARGO_BIN_EXE_aerobridge")),
        &["echo", "--port", "0"],
        &[],
        &[ListenerKind::WebSocket],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ports.data.is_none() && ports.command.is_none(),
        "no telemetry or command listener in echo mode: {:?}",
        echo.log()
    );
    let addr = ports.ws.unwrap();
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).unwrap();
    let big = "x".repeat(1 << 20);
    for msg in [
        Message::text("héllo"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(big.clone()),
    ] {
        ws.send(msg.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), msg);
    }
    ws.close(None).unwrap();
    echo.stop().unwrap_or_else(|e| panic!("{e}"));
}
