//! BER-TLV as IoT SAFE uses it: single-byte tags, lengths in 1 (`00`–`7F`), 2 (`81 xx`) or
//! 3 (`82 xx xx`) bytes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvError(pub &'static str);

/// Reads one TLV at the start of `data`; returns it and the number of bytes it used.
pub fn read_one(data: &[u8]) -> Result<(Tlv<'_>, usize), TlvError> {
    let (&tag, rest) = data.split_first().ok_or(TlvError("empty input"))?;
    let (&first, rest) = rest.split_first().ok_or(TlvError("missing length"))?;
    let (len, header) = match first {
        0x00..=0x7F => (first as usize, 2),
        0x81 => (*rest.first().ok_or(TlvError("short length"))? as usize, 3),
        0x82 => {
            let b = rest.get(..2).ok_or(TlvError("short length"))?;
            (u16::from_be_bytes([b[0], b[1]]) as usize, 4)
        }
        _ => return Err(TlvError("unsupported length form")),
    };
    let value = data
        .get(header..header + len)
        .ok_or(TlvError("value runs past the end"))?;
    Ok((Tlv { tag, value }, header + len))
}

/// Parses a whole string of TLVs.
pub fn parse_all(mut data: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (tlv, used) = read_one(data)?;
        out.push(tlv);
        data = &data[used..];
    }
    Ok(out)
}

/// Appends `tag len value` with the shortest length form.
pub fn push(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(value);
}

pub fn find<'a>(tlvs: &[Tlv<'a>], tag: u8) -> Option<&'a [u8]> {
    tlvs.iter().find(|t| t.tag == tag).map(|t| t.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_in_all_three_forms() {
        let mut v = Vec::new();
        push(&mut v, 0x9B, &[7u8; 5]);
        push(&mut v, 0x9B, &[7u8; 200]);
        push(&mut v, 0x9B, &[7u8; 300]);
        let tlvs = parse_all(&v).unwrap();
        assert_eq!(tlvs.len(), 3);
        assert_eq!(tlvs[0].value.len(), 5);
        assert_eq!(tlvs[1].value.len(), 200);
        assert_eq!(tlvs[2].value.len(), 300);
        assert_eq!(&v[7..9], &[0x9B, 0x81]);
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(parse_all(&[0x84, 0x02, 0x01]).is_err());
        assert!(parse_all(&[0x84]).is_err());
        assert!(parse_all(&[0x84, 0x83, 0, 0, 0]).is_err());
        assert!(parse_all(&[0x84, 0x82, 0x01]).is_err());
    }
}
