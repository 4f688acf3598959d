//! QMUX frames and their TLVs (reference §3.1): marker 0x01, u16 length of everything after
//! the marker, control flags, service, client id, then the SDU header (CTL: flags, u8 tid;
//! other services: flags, u16 tid) and the TLVs. Little-endian throughout.

/// The QMUX marker byte of every frame.
pub(super) const MARKER: u8 = 0x01;
/// The control service.
pub(super) const CTL: u8 = 0x00;
/// The User Identity Module service.
pub(super) const UIM: u8 = 0x0B;

/// QMI protocol errors the simulated modem answers with (reference §6.2).
pub(super) mod error {
    pub const INTERNAL: u16 = 3;
    pub const CLIENT_IDS_EXHAUSTED: u16 = 5;
    pub const INVALID_CLIENT_ID: u16 = 7;
    pub const MISSING_ARGUMENT: u16 = 17;
    pub const DEVICE_NOT_READY: u16 = 52;
    pub const INVALID_ARGUMENT: u16 = 48;
    pub const INSUFFICIENT_RESOURCES: u16 = 68;
    pub const INVALID_QMI_COMMAND: u16 = 71;
    pub const SIM_FILE_NOT_FOUND: u16 = 80;
    pub const ACCESS_DENIED: u16 = 82;
    pub const NOT_SUPPORTED: u16 = 94;
}

/// One QMUX message, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    /// 0x00 from the host, 0x80 from the modem.
    pub control: u8,
    pub service: u8,
    pub client: u8,
    /// SDU flags: CTL 0 request / 1 response / 2 indication; others 0 / 2 / 4.
    pub flags: u8,
    /// CTL carries a u8 here, the other services a u16.
    pub tid: u16,
    pub message: u16,
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// What [`cut`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// A whole frame of this many bytes (parsed, or `None` when its inside is malformed).
    Frame(usize, Option<Frame>),
    /// Not enough bytes yet.
    Partial,
    /// The first byte is no marker: skip it.
    Garbage,
}

impl Frame {
    pub(super) fn tlv(&self, t: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(ty, _)| *ty == t)
            .map(|(_, v)| v.as_slice())
    }

    /// The response to `self` (same service, client, tid and message) with `tlvs` after the
    /// result TLV: success when `error` is `None`.
    pub(super) fn response(&self, error: Option<u16>, tlvs: Vec<(u8, Vec<u8>)>) -> Frame {
        let (result, code) = match error {
            None => (0u16, 0u16),
            Some(e) => (1, e),
        };
        let mut all = vec![(0x02, [result.to_le_bytes(), code.to_le_bytes()].concat())];
        all.extend(tlvs);
        Frame {
            control: 0x80,
            service: self.service,
            client: self.client,
            flags: if self.service == CTL { 0x01 } else { 0x02 },
            tid: self.tid,
            message: self.message,
            tlvs: all,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in &self.tlvs {
            body.push(*t);
            body.extend_from_slice(&(v.len() as u16).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut sdu = vec![self.flags];
        if self.service == CTL {
            sdu.push(self.tid as u8);
        } else {
            sdu.extend_from_slice(&self.tid.to_le_bytes());
        }
        sdu.extend_from_slice(&self.message.to_le_bytes());
        sdu.extend_from_slice(&(body.len() as u16).to_le_bytes());
        sdu.extend_from_slice(&body);
        let mut out = vec![MARKER];
        out.extend_from_slice(&((sdu.len() + 5) as u16).to_le_bytes());
        out.extend_from_slice(&[self.control, self.service, self.client]);
        out.extend_from_slice(&sdu);
        out
    }
}

/// Looks for one frame at the start of `buf`.
pub(super) fn cut(buf: &[u8]) -> Cut {
    match buf.first() {
        None => return Cut::Partial,
        Some(&MARKER) => {}
        Some(_) => return Cut::Garbage,
    }
    if buf.len() < 3 {
        return Cut::Partial;
    }
    let total = usize::from(u16::from_le_bytes([buf[1], buf[2]])) + 1;
    if total < 6 {
        return Cut::Garbage;
    }
    if buf.len() < total {
        return Cut::Partial;
    }
    Cut::Frame(total, parse(&buf[..total]))
}

fn parse(frame: &[u8]) -> Option<Frame> {
    let (control, service, client) = (frame[3], frame[4], frame[5]);
    let sdu = &frame[6..];
    let (flags, tid, rest) = if service == CTL {
        (*sdu.first()?, u16::from(*sdu.get(1)?), sdu.get(2..)?)
    } else {
        (
            *sdu.first()?,
            u16::from_le_bytes([*sdu.get(1)?, *sdu.get(2)?]),
            sdu.get(3..)?,
        )
    };
    let message = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
    let length = usize::from(u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]));
    let mut body = rest.get(4..)?;
    if body.len() != length {
        return None;
    }
    let mut tlvs = Vec::new();
    while !body.is_empty() {
        let t = body[0];
        let len = usize::from(u16::from_le_bytes([*body.get(1)?, *body.get(2)?]));
        tlvs.push((t, body.get(3..3 + len)?.to_vec()));
        body = &body[3 + len..];
    }
    Some(Frame {
        control,
        service,
        client,
        flags,
        tid,
        message,
        tlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_captured_allocate_cid_and_answers_it() {
        let raw = hex::decode("010f00000000000122000400010100 0b".replace(' ', "")).unwrap();
        let Cut::Frame(n, Some(f)) = cut(&raw) else {
            panic!("not a frame")
        };
        assert_eq!(n, raw.len());
        assert_eq!((f.service, f.tid, f.message), (CTL, 1, 0x22));
        assert_eq!(f.tlv(0x01), Some(&[0x0B][..]));
        let r = f.response(None, vec![(0x01, vec![0x0B, 0x01])]);
        assert_eq!(
            hex::encode(r.encode()),
            "011700800000010122000c00020400000000000102000b01"
        );
    }

    #[test]
    fn uim_frames_round_trip_and_partial_input_waits() {
        let raw = hex::decode(
            "012400000b010002004200180001010001101100\
             10a0000005591010ffffffff8900000100",
        )
        .unwrap();
        let Cut::Frame(_, Some(f)) = cut(&raw) else {
            panic!("not a frame")
        };
        assert_eq!((f.service, f.client, f.tid, f.message), (UIM, 1, 2, 0x42));
        assert_eq!(f.encode(), raw);
        assert_eq!(cut(&raw[..10]), Cut::Partial);
        assert_eq!(cut(&[0x7E, 0x01]), Cut::Garbage);
    }
}
