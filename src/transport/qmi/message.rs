//! QMUX framing (see `docs/modems.md`, QMI): marker 0x01, u16 length of everything after the
//! marker, control flags, service, client id, then the SDU header (CTL: flags, u8 transaction
//! id; other services: flags, u16 transaction id), message id, TLV length and the TLVs.
//! Little-endian throughout.

/// The QMUX marker that starts every frame.
const MARKER: u8 = 0x01;
/// The control service (client ids).
pub(super) const CTL: u8 = 0x00;
/// The User Identity Module service.
pub(super) const UIM: u8 = 0x0B;

/// Result TLV of every response: result u16 (0 success, 1 failure), error u16.
const RESULT_TLV: u8 = 0x02;

/// One request, ready to go out.
pub(super) struct Request<'a> {
    pub service: u8,
    pub client: u8,
    pub tid: u16,
    pub message: u16,
    pub tlvs: &'a [(u8, &'a [u8])],
}

impl Request<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in self.tlvs {
            body.push(*t);
            body.extend_from_slice(&(v.len() as u16).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut frame = vec![MARKER, 0, 0, 0x00, self.service, self.client, 0x00];
        if self.service == CTL {
            frame.push(self.tid as u8);
        } else {
            frame.extend_from_slice(&self.tid.to_le_bytes());
        }
        frame.extend_from_slice(&self.message.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u16).to_le_bytes());
        frame.extend_from_slice(&body);
        let length = (frame.len() - 1) as u16;
        frame[1..3].copy_from_slice(&length.to_le_bytes());
        frame
    }
}

/// A frame from the modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub service: u8,
    pub client: u8,
    /// SDU flags: CTL 0x01 response / 0x02 indication; other services 0x02 / 0x04.
    pub flags: u8,
    pub tid: u16,
    pub message: u16,
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl Response {
    pub(super) fn is_response(&self) -> bool {
        let response_flag = if self.service == CTL { 0x01 } else { 0x02 };
        self.flags & response_flag != 0
    }

    pub(super) fn tlv(&self, t: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(ty, _)| *ty == t)
            .map(|(_, v)| v.as_slice())
    }

    /// `Ok` on success, else the QMI error code; a response without a result TLV is
    /// malformed (`Err(None)`).
    pub(super) fn result(&self) -> Result<(), Option<u16>> {
        match self.tlv(RESULT_TLV) {
            Some([0, 0, ..]) => Ok(()),
            Some([_, _, e0, e1]) => Err(Some(u16::from_le_bytes([*e0, *e1]))),
            _ => Err(None),
        }
    }
}

/// What the start of a receive buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// A whole frame of this many bytes (`None` when its inside is malformed).
    Frame(usize, Option<Response>),
    /// Not enough bytes yet.
    Partial,
    /// Bytes that start no QMUX frame: the other side does not speak QMI.
    NotQmux,
}

pub(super) fn cut(buf: &[u8]) -> Cut {
    match buf.first() {
        None => return Cut::Partial,
        Some(&MARKER) => {}
        Some(_) => return Cut::NotQmux,
    }
    if buf.len() < 3 {
        return Cut::Partial;
    }
    let total = usize::from(u16::from_le_bytes([buf[1], buf[2]])) + 1;
    if total < 6 {
        return Cut::NotQmux;
    }
    if buf.len() < total {
        return Cut::Partial;
    }
    Cut::Frame(total, parse(&buf[..total]))
}

fn parse(frame: &[u8]) -> Option<Response> {
    let (service, client) = (frame[4], frame[5]);
    let sdu = &frame[6..];
    let (flags, tid, rest) = if service == CTL {
        (*sdu.first()?, u16::from(*sdu.get(1)?), sdu.get(2..)?)
    } else {
        let tid = u16::from_le_bytes([*sdu.get(1)?, *sdu.get(2)?]);
        (*sdu.first()?, tid, sdu.get(3..)?)
    };
    let message = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
    let length = usize::from(u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]));
    let mut body = rest.get(4..)?;
    if body.len() != length {
        return None;
    }
    let mut tlvs = Vec::new();
    while !body.is_empty() {
        let len = usize::from(u16::from_le_bytes([*body.get(1)?, *body.get(2)?]));
        tlvs.push((body[0], body.get(3..3 + len)?.to_vec()));
        body = &body[3 + len..];
    }
    Some(Response {
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

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text.replace(' ', "")).expect("hex")
    }

    /// The requests of the protocol reference (§3.2 captured from qmicli, §3.3 constructed).
    #[test]
    fn requests_encode_as_the_reference_vectors() {
        let allocate = Request {
            service: CTL,
            client: 0,
            tid: 1,
            message: 0x22,
            tlvs: &[(0x01, &[UIM])],
        };
        assert_eq!(
            allocate.encode(),
            bytes(
                "01 0f00 00 00 00 | 00 01 2200 0400 | 01 0100 0b"
                    .replace('|', "")
                    .as_str()
            )
        );
        let release = Request {
            service: CTL,
            client: 0,
            tid: 2,
            message: 0x23,
            tlvs: &[(0x01, &[UIM, 1])],
        };
        assert_eq!(
            release.encode(),
            bytes("01 1000 00 00 00 00 02 2300 0500 01 0200 0b 01")
        );
        let aid = bytes("10 a0000005591010ffffffff8900000100");
        let open = Request {
            service: UIM,
            client: 1,
            tid: 2,
            message: 0x42,
            tlvs: &[(0x01, &[1]), (0x10, &aid)],
        };
        assert_eq!(
            open.encode(),
            bytes(
                "01 2400 00 0b 01 00 0200 4200 1800 01 0100 01 10 1100 10 a0000005591010ffffffff8900000100"
            )
        );
        let apdu = bytes("0b00 81e2910006bf3e035c015a");
        let send = Request {
            service: UIM,
            client: 1,
            tid: 3,
            message: 0x3B,
            tlvs: &[(0x01, &[1]), (0x02, &apdu), (0x10, &[1])],
        };
        assert_eq!(
            send.encode(),
            bytes(
                "01 2400 00 0b 01 00 0300 3b00 1800 01 0100 01 02 0d00 0b00 81e2910006bf3e035c015a 10 0100 01"
            )
        );
        let close = Request {
            service: UIM,
            client: 1,
            tid: 4,
            message: 0x3F,
            tlvs: &[(0x01, &[1]), (0x11, &[1])],
        };
        assert_eq!(
            close.encode(),
            bytes("01 1400 00 0b 01 00 0400 3f00 0800 01 0100 01 11 0100 01")
        );
    }

    #[test]
    fn responses_parse_as_the_reference_vectors() {
        let raw = bytes(
            "01 2000 80 0b 01 02 0300 3b00 1400 02 0400 0000 0000 10 0a00 0800 bf2e0380010c 9000",
        );
        let Cut::Frame(n, Some(r)) = cut(&raw) else {
            panic!("not a frame");
        };
        assert_eq!(n, raw.len());
        assert!(r.is_response());
        assert_eq!((r.service, r.client, r.tid, r.message), (UIM, 1, 3, 0x3B));
        assert_eq!(r.result(), Ok(()));
        assert_eq!(r.tlv(0x10), Some(&bytes("0800 bf2e0380010c 9000")[..]));

        let failed = bytes("01 1800 80 0b 01 02 0200 4200 0c00 02 0400 0100 4400 11 0200 6a81");
        let Cut::Frame(_, Some(r)) = cut(&failed) else {
            panic!("not a frame");
        };
        assert_eq!(r.result(), Err(Some(68)));
        assert_eq!(r.tlv(0x11), Some(&[0x6A, 0x81][..]));

        let ctl = bytes("01 1700 80 00 00 01 01 2200 0c00 02 0400 0000 0000 01 0200 0b01");
        let Cut::Frame(_, Some(r)) = cut(&ctl) else {
            panic!("not a frame");
        };
        assert_eq!(
            (r.service, r.tid, r.message, r.tlv(0x01)),
            (CTL, 1, 0x22, Some(&[0x0B, 0x01][..]))
        );
    }

    #[test]
    fn partial_and_foreign_bytes_are_told_apart() {
        let raw = bytes("01 1700 80 00 00 01 01 2200 0c00 02 0400 0000 0000 01 0200 0b01");
        assert_eq!(cut(&raw[..9]), Cut::Partial);
        assert_eq!(cut(b"\r\nERROR\r\n"), Cut::NotQmux);
        // A frame whose TLVs overrun their declared length is malformed, not a panic.
        let bad = bytes("01 0f00 80 00 00 01 01 2200 0400 02 0900 00");
        assert!(matches!(cut(&bad), Cut::Frame(_, None)));
    }
}
