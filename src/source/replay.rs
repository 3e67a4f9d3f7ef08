//! `--source replay:FILE`: plays a recording (NDJSON, one frame per line, optionally
//! zstd-compressed) with its original timing, scaled by `--speed`, optionally looping. Lines that
//! are not frames are counted and skipped; a file with no frame at all is a startup error.

use super::Source;
use crate::command::{Command, CommandError};
use crate::telemetry::decode::FrameDecoder;
use crate::telemetry::Variables;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

struct Frame {
    /// Microseconds after the first frame.
    at_us: u64,
    line: Box<[u8]>,
}

/// A recording being played.
pub struct Replay {
    name: String,
    frames: Vec<Frame>,
    speed: f64,
    looping: bool,
    started: Option<Instant>,
    shown: Option<usize>,
    decoder: FrameDecoder,
    vars: Variables,
    /// Lines that were not frames.
    pub skipped: usize,
    finished: bool,
}

/// Reads a recording's whole lines (transparently zstd-decompressed; a torn end is left out,
/// see [`super::recording`]).
pub fn read_recording(path: &Path) -> std::io::Result<Vec<u8>> {
    Ok(super::recording::read(path)?.text)
}

impl Replay {
    /// Loads `path`. `speed` > 0 scales time (2 = twice as fast).
    pub fn open(path: &Path, speed: f64, looping: bool) -> anyhow::Result<Replay> {
        anyhow::ensure!(
            speed.is_finite() && speed > 0.0,
            "--speed must be a positive number, got {speed}"
        );
        let recording = super::recording::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read recording {}: {e}", path.display()))?;
        if let Some(warning) = recording.torn_warning(path) {
            tracing::warn!("{warning}");
        }
        let data = recording.text;
        let mut decoder = FrameDecoder::new();
        let mut scratch = Variables::new();
        let (mut frames, mut skipped) = (Vec::new(), 0);
        let (mut first_ts, mut last_at) = (None, 0u64);
        for (n, line) in data.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match decoder.decode(line, &mut scratch) {
                Ok(info) => {
                    // Frames without a timestamp follow the previous one by 20 ms.
                    let at = match (info.timestamp_us, first_ts) {
                        (Some(t), Some(f)) if t >= f => t - f,
                        (Some(t), None) => {
                            first_ts = Some(t);
                            0
                        }
                        _ => last_at + 20_000,
                    };
                    last_at = at.max(last_at);
                    frames.push(Frame {
                        at_us: last_at,
                        line: line.into(),
                    });
                }
                Err(e) => {
                    skipped += 1;
                    if skipped <= 5 {
                        tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping a line that is not a frame");
                    }
                }
            }
        }
        anyhow::ensure!(
            !frames.is_empty(),
            "{} holds no telemetry frames ({skipped} lines skipped)",
            path.display()
        );
        let mut replay = Replay {
            name: path.display().to_string(),
            frames,
            speed,
            looping,
            started: None,
            shown: None,
            decoder,
            vars: Variables::new(),
            skipped,
            finished: false,
        };
        replay.show(0);
        Ok(replay)
    }

    /// Frames in the recording.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the recording is empty (never: `open` refuses that).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn show(&mut self, i: usize) {
        if self.shown != Some(i) {
            // Lines were validated at load; a failure here cannot happen, but would only keep
            // the previous values.
            let _ = self.decoder.decode(&self.frames[i].line, &mut self.vars);
            self.shown = Some(i);
        }
    }
}

impl Source for Replay {
    fn describe(&self) -> String {
        let span = Duration::from_micros(self.frames.last().map_or(0, |f| f.at_us));
        format!(
            "replay of {} ({} frames, {:.1} s, speed ×{}{}{})",
            self.name,
            self.frames.len(),
            span.as_secs_f64(),
            self.speed,
            if self.looping { ", looping" } else { "" },
            if self.skipped > 0 {
                format!(", {} bad lines skipped", self.skipped)
            } else {
                String::new()
            }
        )
    }

    fn advance(&mut self, _now: SystemTime, _dt: Duration) -> bool {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut elapsed = (started.elapsed().as_secs_f64() * self.speed * 1e6) as u64;
        let end = self.frames.last().map_or(0, |f| f.at_us);
        if elapsed > end {
            if self.looping {
                self.started = Some(Instant::now());
                elapsed = 0;
            } else {
                self.finished = true;
            }
        }
        let i = self
            .frames
            .partition_point(|f| f.at_us <= elapsed)
            .saturating_sub(1);
        self.show(i);
        !self.finished
    }

    fn variables(&self) -> &Variables {
        &self.vars
    }

    fn apply(&mut self, _command: &Command) -> Result<(), CommandError> {
        Err(CommandError::Unavailable(
            "this server replays a recording; commands have no simulator to go to",
        ))
    }
}
