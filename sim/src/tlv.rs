//! Single-byte-tag TLV parsing and encoding as used by IoT SAFE.
//!
//! Lengths are BER: `00..7F`, `81 xx`, `82 xx xx`. Some tags (the signature tag `33`)
//! may alternatively carry a fixed two-byte length `00 40`; callers name those tags.

/// One parsed TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Tag byte.
    pub tag: u8,
    /// Value bytes.
    pub value: &'a [u8],
}

/// TLV parsing failed (truncated, bad length encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvError;

/// Parses a concatenation of TLVs. Tags in `two_byte_len_tags` accept a two-byte
/// big-endian length when the first length byte is `00` and more bytes follow.
pub fn parse<'a>(mut data: &'a [u8], two_byte_len_tags: &[u8]) -> Result<Vec<Tlv<'a>>, TlvError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let tag = data[0];
        let rest = &data[1..];
        let (len, hdr) = match rest.first() {
            None => return Err(TlvError),
            Some(0x00) if two_byte_len_tags.contains(&tag) && rest.len() >= 2 => {
                (((rest[0] as usize) << 8) | rest[1] as usize, 2)
            }
            Some(&b) if b < 0x80 => (b as usize, 1),
            Some(0x81) => match rest.get(1) {
                Some(&l) => (l as usize, 2),
                None => return Err(TlvError),
            },
            Some(0x82) => match (rest.get(1), rest.get(2)) {
                (Some(&h), Some(&l)) => (((h as usize) << 8) | l as usize, 3),
                _ => return Err(TlvError),
            },
            Some(_) => return Err(TlvError),
        };
        let body = &rest[hdr..];
        if body.len() < len {
            return Err(TlvError);
        }
        out.push(Tlv {
            tag,
            value: &body[..len],
        });
        data = &body[len..];
    }
    Ok(out)
}

/// Appends a BER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.push(0x81);
        out.push(len as u8);
    } else {
        let len = len.min(0xFFFF);
        out.push(0x82);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

/// Appends `tag len value` with a BER length.
pub fn push(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// Returns the value of the only TLV with `tag`: `Ok(None)` if absent, `Err` if repeated.
pub fn single<'a>(tlvs: &[Tlv<'a>], tag: u8) -> Result<Option<&'a [u8]>, TlvError> {
    let mut found = None;
    for t in tlvs {
        if t.tag == tag {
            if found.is_some() {
                return Err(TlvError);
            }
            found = Some(t.value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lengths() {
        let data = [0x84, 0x01, 0x01, 0x9B, 0x81, 0x02, 0xAA, 0xBB];
        let t = parse(&data, &[]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].value, &[0xAA, 0xBB]);
        let mut long = vec![0x9B, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        assert_eq!(parse(&long, &[]).unwrap()[0].value.len(), 256);
        assert!(parse(&[0x84], &[]).is_err());
        assert!(parse(&[0x84, 0x02, 0x01], &[]).is_err());
        assert!(parse(&[0x84, 0x83, 0, 0, 1], &[]).is_err());
        assert!(parse(&[0x84, 0x81], &[]).is_err());
    }

    #[test]
    fn two_byte_signature_length() {
        let mut d = vec![0x33, 0x00, 0x02, 1, 2];
        let t = parse(&d, &[0x33]).unwrap();
        assert_eq!(t[0].value, &[1, 2]);
        d = vec![0x33, 0x02, 1, 2];
        assert_eq!(parse(&d, &[0x33]).unwrap()[0].value, &[1, 2]);
        assert_eq!(
            parse(&[0x33, 0x00], &[0x33]).unwrap()[0].value,
            &[] as &[u8]
        );
    }

    #[test]
    fn encode_lengths() {
        let mut v = Vec::new();
        push(&mut v, 0xC1, &[0u8; 200]);
        assert_eq!(&v[..3], &[0xC1, 0x81, 200]);
        let mut v = Vec::new();
        push(&mut v, 0xC1, &[0u8; 300]);
        assert_eq!(&v[..4], &[0xC1, 0x82, 0x01, 0x2C]);
    }
}
