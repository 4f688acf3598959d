//! MBIM framing on the modem's side: the 12-byte header, COMMAND reassembly from fragments,
//! and replies cut into fragments no longer than the host's MaxControlTransfer.

pub const OPEN: u32 = 0x0000_0001;
pub const CLOSE: u32 = 0x0000_0002;
pub const COMMAND: u32 = 0x0000_0003;
pub const OPEN_DONE: u32 = 0x8000_0001;
pub const CLOSE_DONE: u32 = 0x8000_0002;
pub const COMMAND_DONE: u32 = 0x8000_0003;
pub const FUNCTION_ERROR: u32 = 0x8000_0004;

/// Protocol error codes (FUNCTION_ERROR).
pub const ERROR_FRAGMENT_OUT_OF_SEQUENCE: u32 = 2;
pub const ERROR_NOT_OPENED: u32 = 5;

/// COMMAND_DONE status codes.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const BUSY: u32 = 1;
    pub const SIM_NOT_INSERTED: u32 = 3;
    pub const NO_DEVICE_SUPPORT: u32 = 9;
    pub const INVALID_PARAMETERS: u32 = 21;
    pub const NO_LOGICAL_CHANNELS: u32 = 0x8743_0001;
    pub const SELECT_FAILED: u32 = 0x8743_0002;
    pub const INVALID_LOGICAL_CHANNEL: u32 = 0x8743_0003;
}

/// `C2F6588E-F037-4BC9-8665-F4D44BD09367`, MS UICC low-level access.
pub const UICC_SERVICE: [u8; 16] = [
    0xc2, 0xf6, 0x58, 0x8e, 0xf0, 0x37, 0x4b, 0xc9, 0x86, 0x65, 0xf4, 0xd4, 0x4b, 0xd0, 0x93, 0x67,
];
/// `A289CC33-BCBB-8B4F-B6B0-133EC2AAE6DF`, BASIC_CONNECT.
pub const BASIC_CONNECT: [u8; 16] = [
    0xa2, 0x89, 0xcc, 0x33, 0xbc, 0xbb, 0x8b, 0x4f, 0xb6, 0xb0, 0x13, 0x3e, 0xc2, 0xaa, 0xe6, 0xdf,
];
/// `838CF7FB-8D0D-4D7F-871E-D71DBEFBB39B`, the proxy's own service.
pub const PROXY_CONTROL: [u8; 16] = [
    0x83, 0x8c, 0xf7, 0xfb, 0x8d, 0x0d, 0x4d, 0x7f, 0x87, 0x1e, 0xd7, 0x1d, 0xbe, 0xfb, 0xb3, 0x9b,
];

const HEADER: usize = 12;
/// Header + fragment header.
const FRAGMENT_HEADER: usize = 20;
/// Longest message (or fragment) accepted; anything longer means the stream is not MBIM.
const MAX_MESSAGE: usize = 64 * 1024;

/// One message from the host, fragments joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    Open {
        tid: u32,
        max_transfer: u32,
    },
    Close {
        tid: u32,
    },
    Command(Command),
    /// HOST_ERROR or a type the device does not take.
    Other {
        kind: u32,
        tid: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tid: u32,
    pub service: [u8; 16],
    pub cid: u32,
    /// 0 query, 1 set.
    pub command_type: u32,
    pub info: Vec<u8>,
}

/// What the reader found that is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// A fragment out of order: answered with FUNCTION_ERROR.
    OutOfSequence { tid: u32 },
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Cuts the host's byte stream into messages.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// A fragmented COMMAND being collected: (tid, total, next expected, bytes so far).
    partial: Option<(u32, u32, u32, Vec<u8>)>,
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if the buffer holds one. Garbage (a length that cannot be
    /// MBIM) empties the buffer, as libmbim does.
    pub fn next_message(&mut self) -> Option<Result<HostMessage, StreamError>> {
        loop {
            let len = u32_at(&self.buf, 4)? as usize;
            if !(HEADER..=MAX_MESSAGE).contains(&len) {
                self.buf.clear();
                return None;
            }
            if self.buf.len() < len {
                return None;
            }
            let raw: Vec<u8> = self.buf.drain(..len).collect();
            if let Some(m) = self.take(&raw) {
                return Some(m);
            }
        }
    }

    fn take(&mut self, raw: &[u8]) -> Option<Result<HostMessage, StreamError>> {
        let kind = u32_at(raw, 0)?;
        let tid = u32_at(raw, 8)?;
        match kind {
            OPEN => Some(Ok(HostMessage::Open {
                tid,
                max_transfer: u32_at(raw, 12).unwrap_or(4096),
            })),
            CLOSE => Some(Ok(HostMessage::Close { tid })),
            COMMAND => {
                let total = u32_at(raw, 12)?;
                let current = u32_at(raw, 16)?;
                let body = raw.get(FRAGMENT_HEADER..)?;
                if current == 0 {
                    self.partial = Some((tid, total.max(1), 0, Vec::new()));
                }
                let Some((ptid, ptotal, next, mut bytes)) = self.partial.take() else {
                    return Some(Err(StreamError::OutOfSequence { tid }));
                };
                if ptid != tid || current != next || ptotal != total {
                    return Some(Err(StreamError::OutOfSequence { tid }));
                }
                bytes.extend_from_slice(body);
                if current + 1 < total {
                    self.partial = Some((tid, total, next + 1, bytes));
                    return None;
                }
                Some(Ok(parse_command(tid, &bytes)))
            }
            other => Some(Ok(HostMessage::Other { kind: other, tid })),
        }
    }
}

fn parse_command(tid: u32, body: &[u8]) -> HostMessage {
    let fixed = (|| {
        let mut service = [0u8; 16];
        service.copy_from_slice(body.get(..16)?);
        let cid = u32_at(body, 16)?;
        let command_type = u32_at(body, 20)?;
        let info_len = u32_at(body, 24)? as usize;
        let info = body.get(28..28 + info_len)?.to_vec();
        Some(Command {
            tid,
            service,
            cid,
            command_type,
            info,
        })
    })();
    match fixed {
        Some(c) => HostMessage::Command(c),
        None => HostMessage::Other { kind: COMMAND, tid },
    }
}

/// A message of `kind` with a 4-byte body (OPEN_DONE, CLOSE_DONE, FUNCTION_ERROR).
pub fn simple(kind: u32, tid: u32, value: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(16);
    for v in [kind, 16, tid, value] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m
}

/// COMMAND_DONE (or, with `kind`, another fragmented message), cut into fragments of at
/// most `max_transfer` bytes.
pub fn command_done(
    tid: u32,
    service: &[u8; 16],
    cid: u32,
    status: u32,
    info: &[u8],
    max_transfer: usize,
) -> Vec<Vec<u8>> {
    let mut body = Vec::with_capacity(28 + info.len());
    body.extend_from_slice(service);
    body.extend_from_slice(&cid.to_le_bytes());
    body.extend_from_slice(&status.to_le_bytes());
    body.extend_from_slice(&(info.len() as u32).to_le_bytes());
    body.extend_from_slice(info);
    fragments(COMMAND_DONE, tid, &body, max_transfer)
}

pub fn fragments(kind: u32, tid: u32, body: &[u8], max_transfer: usize) -> Vec<Vec<u8>> {
    let room = max_transfer.clamp(64, MAX_MESSAGE) - FRAGMENT_HEADER;
    let chunks: Vec<&[u8]> = body.chunks(room).collect();
    let total = chunks.len().max(1) as u32;
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut m = Vec::with_capacity(FRAGMENT_HEADER + chunk.len());
        let len = (FRAGMENT_HEADER + chunk.len()) as u32;
        for v in [kind, len, tid, total, i as u32] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(chunk);
        out.push(m);
    }
    out
}

/// Rewrites the TransactionId of an encoded message (the proxy's tid mapping).
pub fn set_tid(message: &mut [u8], tid: u32) {
    if message.len() >= HEADER {
        message[8..12].copy_from_slice(&tid.to_le_bytes());
    }
}

/// An information buffer under construction: a fixed part, then 4-byte aligned data.
pub struct InfoBuffer {
    fixed: Vec<u8>,
    data: Vec<u8>,
    fixed_len: usize,
}

impl InfoBuffer {
    pub fn new(fixed_len: usize) -> InfoBuffer {
        InfoBuffer {
            fixed: Vec::with_capacity(fixed_len),
            data: Vec::new(),
            fixed_len,
        }
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.fixed.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.fixed.extend_from_slice(bytes);
        self
    }
    /// Appends `bytes` to the data part; returns its offset (0 when empty).
    fn place(&mut self, bytes: &[u8]) -> u32 {
        if bytes.is_empty() {
            return 0;
        }
        let offset = self.fixed_len + self.data.len();
        self.data.extend_from_slice(bytes);
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
        offset as u32
    }
    /// The MS UICC order: size, then offset.
    pub fn uicc_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let offset = self.place(bytes);
        self.u32(bytes.len() as u32).u32(offset)
    }
    /// The standard order: offset, then size.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let offset = self.place(bytes);
        self.u32(offset).u32(bytes.len() as u32)
    }
    pub fn string(&mut self, text: &str) -> &mut Self {
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        self.bytes(&utf16)
    }
    pub fn finish(&mut self) -> Vec<u8> {
        debug_assert_eq!(self.fixed.len(), self.fixed_len);
        let mut out = std::mem::take(&mut self.fixed);
        out.append(&mut self.data);
        out
    }
}

/// The bytes a (size, offset) pair at `at` of `info` points to (the MS UICC order).
pub fn uicc_bytes_at(info: &[u8], at: usize) -> Option<&[u8]> {
    let size = u32_at(info, at)? as usize;
    let offset = u32_at(info, at + 4)? as usize;
    if size == 0 {
        return Some(&[]);
    }
    info.get(offset..offset.checked_add(size)?)
}

/// The bytes an (offset, size) pair at `at` of `info` points to (the standard order).
pub fn bytes_at(info: &[u8], at: usize) -> Option<&[u8]> {
    let offset = u32_at(info, at)? as usize;
    let size = u32_at(info, at + 4)? as usize;
    if size == 0 {
        return Some(&[]);
    }
    info.get(offset..offset.checked_add(size)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_captured_open_channel_of_mbimcli() {
        let captured = hex::decode(concat!(
            "03000000500000000200000001000000000000",
            "00c2f6588ef0374bc98665f4d44bd0936702000000010000002000000010000000",
            "100000000c00000001000000a0000005591010ffffffff8900000100"
        ))
        .unwrap();
        let mut reader = Reader::default();
        reader.push(&captured[..30]);
        assert_eq!(reader.next_message(), None);
        reader.push(&captured[30..]);
        let Some(Ok(HostMessage::Command(c))) = reader.next_message() else {
            panic!("not a command");
        };
        assert_eq!(
            (c.tid, c.service, c.cid, c.command_type),
            (2, UICC_SERVICE, 2, 1)
        );
        assert_eq!(
            uicc_bytes_at(&c.info, 0).unwrap(),
            hex::decode("a0000005591010ffffffff8900000100").unwrap()
        );
        assert_eq!(
            (u32_at(&c.info, 8), u32_at(&c.info, 12)),
            (Some(12), Some(1))
        );
    }

    #[test]
    fn long_replies_are_fragmented_and_reassembled() {
        let info: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let frags = command_done(7, &UICC_SERVICE, 4, 0, &info, 128);
        assert!(frags.len() > 2 && frags.iter().all(|f| f.len() <= 128));
        // The same bytes as a host COMMAND come back whole.
        let mut reader = Reader::default();
        for mut f in frags {
            f[0..4].copy_from_slice(&COMMAND.to_le_bytes());
            reader.push(&f);
        }
        let Some(Ok(HostMessage::Command(c))) = reader.next_message() else {
            panic!("not reassembled");
        };
        assert_eq!((c.tid, c.cid, c.info), (7, 4, info));
    }

    #[test]
    fn out_of_sequence_fragment_is_reported() {
        let frags = command_done(9, &UICC_SERVICE, 4, 0, &[0u8; 300], 128);
        let mut reader = Reader::default();
        let mut f = frags[1].clone();
        f[0..4].copy_from_slice(&COMMAND.to_le_bytes());
        reader.push(&f);
        assert_eq!(
            reader.next_message(),
            Some(Err(StreamError::OutOfSequence { tid: 9 }))
        );
    }
}
