//! Client-to-server masking (RFC 6455 §5.3): XOR with a 4-byte key, a word at a time.

/// XORs `data` in place with `mask`, starting at key offset 0.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let key8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ key8;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bytewise_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
            let mut data = original.clone();
            unmask(&mut data, mask);
            for (i, (a, b)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*a, b ^ mask[i % 4]);
            }
        }
        // RFC 6455 §5.7 example: masked "Hello".
        let mut hello = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut hello, mask);
        assert_eq!(&hello, b"Hello");
    }
}
