//! UTF-8 validation that works across fragment boundaries, so an invalid text message fails as
//! soon as the offending byte arrives rather than after the whole message is buffered.

/// Tracks how much of a growing buffer is known to be valid UTF-8.
#[derive(Debug, Default)]
pub struct Utf8Validator {
    checked: usize,
}

/// The bytes are not UTF-8.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Forgets everything (a new message starts).
    pub fn reset(&mut self) {
        self.checked = 0;
    }

    /// Validates what was appended to `buf` since the last call. A sequence cut at the end is
    /// accepted while `complete` is false (the next fragment may finish it).
    pub fn check(&mut self, buf: &[u8], complete: bool) -> Result<(), InvalidUtf8> {
        match std::str::from_utf8(&buf[self.checked..]) {
            Ok(_) => {
                self.checked = buf.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !complete => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sequences_and_invalid_bytes() {
        let text = "κόσμε".as_bytes();
        let mut v = Utf8Validator::default();
        let mut buf = Vec::new();
        for (i, b) in text.iter().enumerate() {
            buf.push(*b);
            v.check(&buf, i + 1 == text.len()).unwrap();
        }
        let mut v = Utf8Validator::default();
        assert_eq!(v.check(&[0xce, 0xba, 0xe1], true), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert!(v.check(&[0xce, 0xba, 0xe1], false).is_ok());
        // An impossible byte fails fast even mid-message.
        let mut v = Utf8Validator::default();
        assert_eq!(v.check(&[b'a', 0xff], false), Err(InvalidUtf8));
    }
}
