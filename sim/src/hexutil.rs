//! Tiny hex helpers (upper-case output, lenient input).

/// Encodes bytes as upper-case hex without separators.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0F) as usize] as char);
    }
    s
}

/// Decodes hex, ignoring ASCII whitespace, `:` and `_` separators.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':' && *c != b'_')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks(2) {
        let hi = nibble(pair[0]).ok_or_else(|| format!("invalid hex in {s:?}"))?;
        let lo = nibble(pair[1]).ok_or_else(|| format!("invalid hex in {s:?}"))?;
        out.push((hi << 4) | lo);
    }
    Ok(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0x00, 0xAB, 0x7f]), "00AB7F");
        assert_eq!(decode("00ab 7F:01").unwrap(), vec![0, 0xAB, 0x7F, 1]);
        assert!(decode("0").is_err());
        assert!(decode("zz").is_err());
    }
}
