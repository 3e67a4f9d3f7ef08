//! The per-tick and per-message hot paths, on the protocol core alone (`aerobridge-proto`).
//! Run: `cargo bench -p aerobridge-proto --bench hot_paths`.

use aerobridge_proto::command::{parse_line, ParseLimits};
use aerobridge_proto::packet::{Framing, Packet};
use aerobridge_proto::queue::{QueueLimits, SendQueue};
use aerobridge_proto::sim::Sim;
use aerobridge_proto::telemetry::{FrameEncoder, FrameHeader};
use aerobridge_proto::ws::frame::{encode_header_right_aligned, MAX_SERVER_HEADER};
use aerobridge_proto::ws::{handshake, reader::client_frame, MessageReader, OpCode};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn header() -> FrameHeader {
    FrameHeader {
        timestamp_us: 1_763_000_000_000_000,
        data_valid: true,
        update_counter: 123_456,
        broadcast_rate_hz: 50.0,
    }
}

fn encode(c: &mut Criterion) {
    let mut sim = Sim::new(std::time::SystemTime::now());
    sim.advance(SystemTime::now(), Duration::from_millis(20));
    let mut enc = FrameEncoder::new();
    let len = enc.encode(&header(), sim.variables()).len();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("encode_full_frame", |b| {
        b.iter(|| black_box(enc.encode(black_box(&header()), sim.variables()).len()))
    });
    g.bench_function("sim_step_and_encode_and_packet", |b| {
        b.iter(|| {
            sim.advance(SystemTime::now(), Duration::from_millis(20));
            let payload = enc.encode(&header(), sim.variables());
            black_box(Packet::build(1, 1, Instant::now(), payload))
        })
    });
    g.finish();
    c.bench_function("ws_header_encode", |b| {
        let mut out = [0u8; MAX_SERVER_HEADER];
        b.iter(|| {
            black_box(encode_header_right_aligned(
                OpCode::Text,
                black_box(13_000),
                &mut out,
            ))
        })
    });
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_frame_parse_unmask");
    for size in [64usize, 1024, 16 * 1024] {
        let frame = client_frame(true, 1, &vec![b'a'; size], [1, 2, 3, 4]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &frame, |b, frame| {
            let mut reader = MessageReader::new(64 * 1024);
            let mut buf = frame.clone();
            b.iter(|| {
                buf.copy_from_slice(frame);
                black_box(reader.decode(&mut buf).unwrap())
            })
        });
    }
    g.finish();
    let request = b"GET / HTTP/1.1\r\nHost: localhost:8765\r\nUser-Agent: bench\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n\r\n";
    c.bench_function("upgrade_handshake", |b| {
        b.iter(|| {
            let (req, _) = handshake::parse_upgrade(black_box(request), 8192)
                .unwrap()
                .unwrap();
            black_box(handshake::switching_protocols(&req.accept, None, None))
        })
    });
    let line = br#"{"variable": "Controls.Throttle", "value": 0.75, "id": 17}"#;
    c.bench_function("command_parse_validate", |b| {
        let mut out = Vec::with_capacity(4);
        let mut buf = line.to_vec();
        b.iter(|| {
            out.clear();
            buf.copy_from_slice(line);
            parse_line(&mut buf, ParseLimits::default(), &mut out);
            black_box(out.len())
        })
    });
}

fn publish(c: &mut Criterion) {
    let mut sim = Sim::new(std::time::SystemTime::now());
    sim.advance(SystemTime::now(), Duration::from_millis(20));
    let mut enc = FrameEncoder::new();
    let payload = enc.encode(&header(), sim.variables()).to_vec();
    let mut g = c.benchmark_group("publish_tick_to_queues");
    for clients in [1_000usize, 10_000] {
        g.throughput(Throughput::Elements(clients as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(clients),
            &clients,
            |b, &clients| {
                let mut queues: Vec<SendQueue> = (0..clients)
                    .map(|i| {
                        SendQueue::new(
                            if i % 2 == 0 {
                                Framing::Lines
                            } else {
                                Framing::WebSocket
                            },
                            QueueLimits::default(),
                        )
                    })
                    .collect();
                b.iter(|| {
                    // One tick: build the shared packet once, push it to every queue, then every
                    // writer takes its item (what the worker and the client tasks do per tick).
                    let now = Instant::now();
                    let packet = Arc::new(Packet::build(1, 1, now, &payload));
                    for q in &mut queues {
                        black_box(q.push_frame(&packet, now));
                    }
                    for q in &mut queues {
                        black_box(q.take_next());
                        q.complete();
                    }
                })
            },
        );
    }
    g.finish();
}

/// A tick's v2 work: every profile due builds one message (keyframe or delta), whatever the
/// number of clients; `n` profiles of all variables but one, in delta mode, every frame.
fn profiles(c: &mut Criterion) {
    use aerobridge_proto::profile::build::Frame;
    use aerobridge_proto::profile::{Mode, ProfileBuilder, ProfileKey, Profiles};
    use aerobridge_proto::telemetry::VARIABLE_COUNT;
    let mut g = c.benchmark_group("v2_profiles_per_tick");
    for n in [1usize, 20] {
        let table = Profiles::new(256);
        let _held: Vec<_> = (0..n)
            .map(|skip| {
                let vars = (0..VARIABLE_COUNT as u16)
                    .filter(|&v| v as usize != skip)
                    .collect();
                table
                    .acquire(ProfileKey::new(vars, 1, Mode::Delta))
                    .unwrap()
            })
            .collect();
        let mut builder = ProfileBuilder::new(
            Arc::clone(&table),
            50.0,
            aerobridge_proto::ws::deflate::Mode::Off,
            Instant::now,
        );
        let mut sim = Sim::new(std::time::SystemTime::now());
        let mut enc = FrameEncoder::new();
        let mut seq = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                sim.advance(SystemTime::now(), Duration::from_millis(20));
                let mut h = header();
                h.update_counter = seq;
                let payload = enc.encode(&h, sim.variables()).to_vec();
                black_box(builder.build(
                    false,
                    &Frame {
                        seq,
                        timestamp_us: h.timestamp_us,
                        valid: true,
                        built: Instant::now(),
                        payload: &payload,
                        spans: enc.value_spans(),
                    },
                ))
            })
        });
    }
    g.finish();
}

/// permessage-deflate of a full frame, once per tick for everyone: standalone, and against the
/// previous frame (flate2 on zlib-rs, level 1).
fn deflate(c: &mut Criterion) {
    use aerobridge_proto::ws::deflate::Deflater;
    let mut sim = Sim::new(std::time::SystemTime::now());
    let mut enc = FrameEncoder::new();
    sim.advance(SystemTime::now(), Duration::from_millis(20));
    let prev = enc.encode(&header(), sim.variables()).to_vec();
    sim.advance(SystemTime::now(), Duration::from_millis(20));
    let frame = enc.encode(&header(), sim.variables()).to_vec();
    let mut d = Deflater::default();
    let standalone = d.compress(&frame, None).len();
    let dict = d.compress(&frame, Some(&prev)).len();
    eprintln!(
        "deflate: frame {} B, standalone {standalone} B ({:.3}), with the previous frame {dict} B ({:.3})",
        frame.len(),
        standalone as f64 / frame.len() as f64,
        dict as f64 / frame.len() as f64
    );
    let mut g = c.benchmark_group("deflate_frame");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("standalone", |b| {
        b.iter(|| black_box(d.compress(black_box(&frame), None).len()))
    });
    g.bench_function("dictionary", |b| {
        b.iter(|| black_box(d.compress(black_box(&frame), Some(&prev)).len()))
    });
    g.finish();
}

criterion_group!(benches, encode, codec, publish, profiles, deflate);
criterion_main!(benches);
