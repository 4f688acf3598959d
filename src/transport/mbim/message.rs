//! MBIM framing on the host's side: requests out (cut into fragments when long), replies in
//! (fragments joined), matched by TransactionId.

use std::fmt;

pub(super) const OPEN: u32 = 0x0000_0001;
pub(super) const COMMAND: u32 = 0x0000_0003;
pub(super) const OPEN_DONE: u32 = 0x8000_0001;
pub(super) const COMMAND_DONE: u32 = 0x8000_0003;
pub(super) const FUNCTION_ERROR: u32 = 0x8000_0004;

/// FUNCTION_ERROR: a command before OPEN (or after the function was reset).
pub(super) const ERROR_NOT_OPENED: u32 = 5;

/// Longest message the host sends in one piece (libmbim's fixed limit).
const MAX_SEND: usize = 4096;
/// A length beyond this cannot be MBIM from a SIM-carrying modem: the stream is garbage.
const MAX_MESSAGE: usize = 64 * 1024;
const HEADER: usize = 12;
const FRAGMENT_HEADER: usize = 20;

/// A 16-byte device-service UUID, in wire order.
pub(super) type Service = [u8; 16];

/// `C2F6588E-F037-4BC9-8665-F4D44BD09367`.
pub(super) const UICC_SERVICE: Service = [
    0xc2, 0xf6, 0x58, 0x8e, 0xf0, 0x37, 0x4b, 0xc9, 0x86, 0x65, 0xf4, 0xd4, 0x4b, 0xd0, 0x93, 0x67,
];
/// `A289CC33-BCBB-8B4F-B6B0-133EC2AAE6DF`.
pub(super) const BASIC_CONNECT: Service = [
    0xa2, 0x89, 0xcc, 0x33, 0xbc, 0xbb, 0x8b, 0x4f, 0xb6, 0xb0, 0x13, 0x3e, 0xc2, 0xaa, 0xe6, 0xdf,
];
/// `838CF7FB-8D0D-4D7F-871E-D71DBEFBB39B`.
pub(super) const PROXY_CONTROL: Service = [
    0x83, 0x8c, 0xf7, 0xfb, 0x8d, 0x0d, 0x4d, 0x7f, 0x87, 0x1e, 0xd7, 0x1d, 0xbe, 0xfb, 0xb3, 0x9b,
];

pub(super) const QUERY: u32 = 0;
pub(super) const SET: u32 = 1;

pub(super) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// OPEN with our MaxControlTransfer.
pub(super) fn open(tid: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(16);
    for v in [OPEN, 16, tid, MAX_SEND as u32] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m
}

/// A COMMAND, as one message or as fragments of at most 4096 bytes, concatenated.
pub(super) fn command(tid: u32, service: &Service, cid: u32, kind: u32, info: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(28 + info.len());
    body.extend_from_slice(service);
    body.extend_from_slice(&cid.to_le_bytes());
    body.extend_from_slice(&kind.to_le_bytes());
    body.extend_from_slice(&(info.len() as u32).to_le_bytes());
    body.extend_from_slice(info);
    let chunks: Vec<&[u8]> = body.chunks(MAX_SEND - FRAGMENT_HEADER).collect();
    let total = chunks.len() as u32;
    let mut out = Vec::with_capacity(body.len() + FRAGMENT_HEADER * chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let len = (FRAGMENT_HEADER + chunk.len()) as u32;
        for v in [COMMAND, len, tid, total, i as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(chunk);
    }
    out
}

/// A reply from the function, fragments joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// OPEN_DONE / CLOSE_DONE: the status.
    Done {
        kind: u32,
        tid: u32,
        status: u32,
    },
    CommandDone {
        tid: u32,
        service: Service,
        cid: u32,
        status: u32,
        info: Vec<u8>,
    },
    FunctionError {
        tid: u32,
        code: u32,
    },
    /// INDICATE_STATUS and anything else the host does not wait for.
    Other {
        kind: u32,
        tid: u32,
    },
}

impl Reply {
    pub(super) fn tid(&self) -> u32 {
        match self {
            Reply::Done { tid, .. }
            | Reply::CommandDone { tid, .. }
            | Reply::FunctionError { tid, .. }
            | Reply::Other { tid, .. } => *tid,
        }
    }
}

/// The stream is not MBIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotMbim(pub(super) String);

impl fmt::Display for NotMbim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cuts the device's byte stream into replies.
#[derive(Default)]
pub(super) struct ReplyReader {
    buf: Vec<u8>,
    /// A fragmented reply being collected: (kind, tid, total, next, bytes).
    partial: Option<(u32, u32, u32, u32, Vec<u8>)>,
}

impl ReplyReader {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets everything buffered (at the start of a turn: nothing before it is ours).
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.partial = None;
    }

    /// The next whole reply; `Ok(None)` when more bytes are needed. Garbage empties the
    /// buffer and is reported.
    pub(super) fn next_reply(&mut self) -> Result<Option<Reply>, NotMbim> {
        loop {
            let Some(len) = u32_at(&self.buf, 4) else {
                return Ok(None);
            };
            let kind = u32_at(&self.buf, 0).unwrap_or(0);
            let len = len as usize;
            let known = matches!(kind, 0x8000_0001..=0x8000_0004 | 0x8000_0007);
            if !known || !(HEADER..=MAX_MESSAGE).contains(&len) {
                let head = hex::encode(&self.buf[..self.buf.len().min(16)]);
                self.clear();
                return Err(NotMbim(format!("not an MBIM message: {head}…")));
            }
            if self.buf.len() < len {
                return Ok(None);
            }
            let raw: Vec<u8> = self.buf.drain(..len).collect();
            if let Some(reply) = self.take(kind, &raw) {
                return Ok(Some(reply));
            }
        }
    }

    fn take(&mut self, kind: u32, raw: &[u8]) -> Option<Reply> {
        let tid = u32_at(raw, 8)?;
        match kind {
            OPEN_DONE | 0x8000_0002 => Some(Reply::Done {
                kind,
                tid,
                status: u32_at(raw, 12)?,
            }),
            FUNCTION_ERROR => Some(Reply::FunctionError {
                tid,
                code: u32_at(raw, 12)?,
            }),
            COMMAND_DONE => {
                let total = u32_at(raw, 12)?;
                let current = u32_at(raw, 16)?;
                let body = raw.get(FRAGMENT_HEADER..)?;
                if current == 0 {
                    self.partial = Some((kind, tid, total.max(1), 0, Vec::new()));
                }
                let (pkind, ptid, ptotal, next, mut bytes) = self.partial.take()?;
                if pkind != kind || ptid != tid || ptotal != total || next != current {
                    return None;
                }
                bytes.extend_from_slice(body);
                if current + 1 < total {
                    self.partial = Some((kind, tid, total, next + 1, bytes));
                    return None;
                }
                let mut service = [0u8; 16];
                service.copy_from_slice(bytes.get(..16)?);
                let info_len = u32_at(&bytes, 24)? as usize;
                Some(Reply::CommandDone {
                    tid,
                    service,
                    cid: u32_at(&bytes, 16)?,
                    status: u32_at(&bytes, 20)?,
                    info: bytes.get(28..28usize.checked_add(info_len)?)?.to_vec(),
                })
            }
            _ => Some(Reply::Other { kind, tid }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OPEN_CHANNEL request mbimcli 1.28.2 sent (reference §1.11).
    #[test]
    fn command_matches_the_captured_open_channel() {
        let info = hex::decode("10000000100000000c00000001000000a0000005591010ffffffff8900000100")
            .unwrap();
        let expected = hex::decode(concat!(
            "0300000050000000020000000100000000000000",
            "c2f6588ef0374bc98665f4d44bd09367",
            "020000000100000020000000",
            "10000000100000000c00000001000000a0000005591010ffffffff8900000100"
        ))
        .unwrap();
        assert_eq!(command(2, &UICC_SERVICE, 2, SET, &info), expected);
    }

    #[test]
    fn open_matches_the_capture() {
        assert_eq!(
            open(1),
            hex::decode("010000001000000001000000 00100000".replace(' ', "")).unwrap()
        );
    }

    #[test]
    fn long_commands_are_fragmented() {
        let info = vec![0xAB; 5000];
        let bytes = command(9, &UICC_SERVICE, 4, SET, &info);
        let first_len = u32_at(&bytes, 4).unwrap() as usize;
        assert_eq!(first_len, 4096);
        assert_eq!((u32_at(&bytes, 12), u32_at(&bytes, 16)), (Some(2), Some(0)));
        let second = &bytes[first_len..];
        assert_eq!((u32_at(second, 12), u32_at(second, 16)), (Some(2), Some(1)));
        assert_eq!(bytes.len(), 28 + 5000 + 2 * 20);
    }

    fn done_fragment(tid: u32, total: u32, current: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [COMMAND_DONE, (20 + body.len()) as u32, tid, total, current] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(body);
        m
    }

    /// A COMMAND_DONE split inside its fixed fields, read one byte at a time.
    #[test]
    fn fragmented_reply_is_joined() {
        let mut body = UICC_SERVICE.to_vec();
        body.extend_from_slice(&1u32.to_le_bytes()); // ATR
        body.extend_from_slice(&0u32.to_le_bytes()); // status
        body.extend_from_slice(&8u32.to_le_bytes());
        body.extend_from_slice(&hex::decode("0300000008000000").unwrap());
        let mut stream = done_fragment(5, 2, 0, &body[..10]);
        stream.extend(done_fragment(5, 2, 1, &body[10..]));
        let mut reader = ReplyReader::default();
        let mut got = None;
        for b in stream {
            reader.push(&[b]);
            if let Some(r) = reader.next_reply().unwrap() {
                got = Some(r);
            }
        }
        assert_eq!(
            got,
            Some(Reply::CommandDone {
                tid: 5,
                service: UICC_SERVICE,
                cid: 1,
                status: 0,
                info: hex::decode("0300000008000000").unwrap(),
            })
        );
    }

    #[test]
    fn garbage_is_reported() {
        let mut reader = ReplyReader::default();
        reader.push(b"\r\nOK\r\n\r\n+CME ERROR: 10\r\n");
        assert!(reader.next_reply().is_err());
        assert_eq!(reader.next_reply(), Ok(None));
    }

    #[test]
    fn function_error_is_read() {
        let mut reader = ReplyReader::default();
        reader.push(&hex::decode("04000080100000000700000005000000").unwrap());
        assert_eq!(
            reader.next_reply(),
            Ok(Some(Reply::FunctionError {
                tid: 7,
                code: ERROR_NOT_OPENED
            }))
        );
    }

    /// Every byte of a valid exchange changed to a few values, and every truncation: the
    /// reader never panics, never loops, and whatever it returns the UICC parsers take safely.
    #[test]
    fn mutated_replies_never_panic() {
        let mut body = UICC_SERVICE.to_vec();
        body.extend_from_slice(&4u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        let info = hex::decode("900000000300000008000000bf2e0300").unwrap();
        body.extend_from_slice(&(info.len() as u32).to_le_bytes());
        body.extend_from_slice(&info);
        let mut stream = done_fragment(3, 2, 0, &body[..20]);
        stream.extend(done_fragment(3, 2, 1, &body[20..]));
        stream.extend(hex::decode("04000080100000000700000005000000").unwrap());
        let check = |bytes: &[u8]| {
            let mut reader = ReplyReader::default();
            reader.push(bytes);
            for _ in 0..bytes.len() + 2 {
                match reader.next_reply() {
                    Ok(Some(Reply::CommandDone { info, .. })) => {
                        let _ = crate::transport::mbim::uicc::parse_apdu(&info);
                        let _ = crate::transport::mbim::uicc::parse_open_channel(&info);
                        let _ = crate::transport::mbim::uicc::parse_atr(&info);
                        let _ = crate::transport::mbim::uicc::parse_hardware_info(&info);
                    }
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => return,
                }
            }
            panic!(
                "the reader kept returning replies from {} bytes",
                bytes.len()
            );
        };
        for at in 0..stream.len() {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut mutated = stream.clone();
                mutated[at] = value;
                check(&mutated);
            }
            check(&stream[..at]);
        }
    }
}
