//! The recording file format: NDJSON, one frame per line exactly as received; zstd-compressed
//! when the name ends in `.zst`.
//!
//! Crash-safe by construction. A `.zst` recording is a *sequence of independent zstd frames*,
//! each closed and written (and `fdatasync`ed) at least every [`FLUSH_EVERY`], so a crash —
//! SIGKILL, power loss — loses at most that much: every frame before it decodes on its own. A
//! plain recording is flushed as often. A write error (disk full) truncates the file back to its
//! last whole flush, so what is there stays valid.
//!
//! Reading takes everything up to the last complete record of a torn file and says where it was
//! torn ([`Torn`]); zstd's own tools read the same files (concatenated frames are standard).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a recording is made durable: at most this much is lost to a crash.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// zstd's level for recordings (telemetry compresses ~30× at 9; a frame a second costs ~1%).
const LEVEL: i32 = 9;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Writes a recording durably: lines are buffered and closed into the file every
/// [`FLUSH_EVERY`] (a zstd frame each for `.zst`).
pub struct Writer {
    file: File,
    zstd: bool,
    pending: Vec<u8>,
    pending_lines: u64,
    /// Bytes of the file that are whole (everything up to the last successful flush).
    good_len: u64,
    /// Lines in those bytes.
    lines: u64,
    last_flush: Instant,
}

/// A write failed: the file was cut back to its last whole flush.
#[derive(Debug)]
pub struct WriteFailed {
    /// The error.
    pub error: io::Error,
    /// Lines the file holds, all of them whole.
    pub lines_kept: u64,
}

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = if self.error.raw_os_error() == Some(28) {
            " (disk full)"
        } else {
            ""
        };
        write!(
            f,
            "{}{hint}; the recording stops there, valid with {} frames",
            self.error, self.lines_kept
        )
    }
}

impl std::error::Error for WriteFailed {}

impl Writer {
    /// Creates `path` (`.zst`: compressed).
    pub fn create(path: &Path) -> io::Result<Writer> {
        Ok(Writer {
            file: File::create(path)?,
            zstd: is_zst(path),
            pending: Vec::with_capacity(1 << 20),
            pending_lines: 0,
            good_len: 0,
            lines: 0,
            last_flush: Instant::now(),
        })
    }

    /// Adds one line (ending in `\n`); flushes when the last flush is [`FLUSH_EVERY`] old.
    pub fn line(&mut self, line: &[u8]) -> Result<(), WriteFailed> {
        self.pending.extend_from_slice(line);
        self.pending_lines += 1;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Lines that are in the file, whole.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    /// Closes what is buffered into the file (one zstd frame) and makes it durable.
    pub fn flush(&mut self) -> Result<(), WriteFailed> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (|| {
            let bytes = if self.zstd {
                let frame = zstd::bulk::compress(&self.pending, LEVEL)?;
                self.file.write_all(&frame)?;
                frame.len()
            } else {
                self.file.write_all(&self.pending)?;
                self.pending.len()
            };
            self.file.sync_data()?;
            Ok::<u64, io::Error>(bytes as u64)
        })();
        match result {
            Ok(bytes) => {
                self.good_len += bytes;
                self.lines += self.pending_lines;
                self.pending.clear();
                self.pending_lines = 0;
                Ok(())
            }
            Err(error) => {
                // A partial write would leave a torn record: cut back to the last whole one.
                let _ = self.file.set_len(self.good_len);
                Err(WriteFailed {
                    error,
                    lines_kept: self.lines,
                })
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn is_zst(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zst")
}

/// Where a recording was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// The file offset where the incomplete part starts.
    pub at_byte: u64,
    /// Whole lines before it.
    pub lines_before: u64,
}

/// A recording's text, up to its last complete record.
pub struct Recording {
    /// NDJSON: whole lines only.
    pub text: Vec<u8>,
    /// Set when the file ended inside a record (a crash while recording).
    pub torn: Option<Torn>,
}

impl Recording {
    /// The warning for a torn file, naming it.
    pub fn torn_warning(&self, path: &Path) -> Option<String> {
        self.torn.as_ref().map(|t| {
            format!(
                "{}: torn at byte {} after {} frames (crash while recording?); replaying what is whole",
                path.display(),
                t.at_byte,
                t.lines_before
            )
        })
    }
}

/// Reads a recording (plain or zstd, one frame or many), keeping what is whole.
pub fn read(path: &Path) -> io::Result<Recording> {
    let raw = std::fs::read(path)?;
    if !raw.starts_with(&ZSTD_MAGIC) {
        return Ok(whole_lines(raw));
    }
    let mut text = Vec::with_capacity(raw.len() * 20);
    let mut pos = 0usize;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let whole = zstd::zstd_safe::find_frame_compressed_size(rest)
            .ok()
            .filter(|&n| n <= rest.len());
        let Some(n) = whole else {
            // A frame cut short: keep the whole lines of what its complete blocks decode to.
            let mut partial = Vec::new();
            let _ = zstd::stream::read::Decoder::new(rest)
                .and_then(|mut d| d.read_to_end(&mut partial));
            let keep = partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            text.extend_from_slice(&partial[..keep]);
            let lines = count_lines(&text);
            return Ok(Recording {
                text,
                torn: Some(Torn {
                    at_byte: pos as u64,
                    lines_before: lines,
                }),
            });
        };
        zstd::stream::read::Decoder::new(&rest[..n])?
            .single_frame()
            .read_to_end(&mut text)?;
        pos += n;
    }
    // Whole frames only; a line cut inside one (not written by `record`) is still torn, at its
    // offset in the decompressed text.
    Ok(whole_lines(text))
}

/// Keeps `text` up to its last newline; a last line without one is torn unless it is a whole
/// JSON document (a hand-written file without a final newline).
fn whole_lines(mut text: Vec<u8>) -> Recording {
    let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep == text.len() {
        return Recording { text, torn: None };
    }
    let mut last = text[keep..].to_vec();
    if simd_json::to_tape(&mut last).is_ok() {
        text.push(b'\n');
        return Recording { text, torn: None };
    }
    text.truncate(keep);
    let lines = count_lines(&text);
    Recording {
        text,
        torn: Some(Torn {
            at_byte: keep as u64,
            lines_before: lines,
        }),
    }
}

fn count_lines(text: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', text).count() as u64
}

/// `aerobridge record --repair IN OUT`: writes the whole part of `input` to a clean `output`
/// (compressed if its name ends in `.zst`). Returns the lines written and where `input` was torn.
pub fn repair(input: &Path, output: &Path) -> anyhow::Result<(u64, Option<Torn>)> {
    let recording =
        read(input).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", input.display()))?;
    let mut writer = Writer::create(output)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", output.display()))?;
    for line in recording.text.split_inclusive(|&b| b == b'\n') {
        writer.line(line)?;
    }
    writer.flush()?;
    Ok((writer.lines_written(), recording.torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "aerobridge-recording-{}-{name}",
            std::process::id()
        ))
    }

    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{{\"update_counter\":{i},\"x\":{}}}\n", i * 7).into_bytes())
            .collect()
    }

    #[test]
    fn a_torn_zst_recording_reads_up_to_its_last_whole_frame() {
        let path = temp("torn.ndjson.zst");
        let lines = frames(300);
        {
            let mut w = Writer::create(&path).unwrap();
            for (i, l) in lines.iter().enumerate() {
                w.line(l).unwrap();
                if i % 100 == 99 {
                    w.flush().unwrap(); // three zstd frames
                }
            }
        }
        let whole = std::fs::read(&path).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.text, lines.concat());
        assert_eq!(r.torn, None);
        // Cut inside the last frame: the first two frames' 200 lines are whole.
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let r = read(&path).unwrap();
        assert!(
            r.text.len() >= lines[..200].concat().len(),
            "{}",
            r.text.len()
        );
        assert!(lines.concat().starts_with(&r.text));
        let torn = r.torn.clone().unwrap();
        assert!(torn.lines_before >= 200);
        assert!(r
            .torn_warning(Path::new("f.zst"))
            .unwrap()
            .contains("crash while recording?"));
        // repair writes a clean file with the same whole lines.
        let clean = temp("clean.ndjson.zst");
        let (n, was) = repair(&path, &clean).unwrap();
        assert_eq!(n, torn.lines_before);
        assert!(was.is_some());
        let again = read(&clean).unwrap();
        assert_eq!((again.text, again.torn), (r.text, None));
        for p in [path, clean] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn a_plain_recording_drops_a_torn_last_line_but_keeps_a_whole_one_without_newline() {
        let path = temp("plain.ndjson");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.text, b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(
            r.torn,
            Some(Torn {
                at_byte: 16,
                lines_before: 2
            })
        );
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}").unwrap();
        let r = read(&path).unwrap();
        assert_eq!((r.text, r.torn), (b"{\"a\":1}\n{\"a\":2}\n".to_vec(), None));
        let _ = std::fs::remove_file(path);
    }
}
