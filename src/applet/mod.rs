//! The IoT SAFE (GSMA IoT.05) client: one function per applet command, APDU exchange with the
//! `61xx` / `6Cxx` / `9Fxx` / `91xx` rules applied in exactly one place, and status words mapped
//! to PKCS#11 errors.

pub mod objects;
pub mod tlv;

use cryptoki_sys::*;
use log::{debug, log_enabled, trace};

use crate::error::{Error, Result};
use crate::transport::Transmit;
pub use objects::{ObjectClass, ObjectInfo};

/// The GSMA IoT SAFE applet AID.
pub const GSMA_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10];

/// The session number this module uses for COMPUTE SIGNATURE (its channel is leased for the
/// whole sequence, so one number per channel is enough).
const SIGN_SESSION: u8 = 0x01;

/// Safety net against a card that answers `61xx` forever.
const MAX_GET_RESPONSE_ROUNDS: usize = 64;

pub const SW_OK: u16 = 0x9000;
pub const SW_MORE_DATA: u16 = 0x6300;
/// Success, and a remote-management session has completed since the last command.
pub const SW_REMOTE_UPDATE_COMPLETED: u16 = 0x63CF;
/// Session number of PUT PUBLIC KEY.
const PUT_KEY_SESSION: u8 = 0x01;

/// Which CLA class to send IoT SAFE commands in: inter-industry `0x`/`4x` or proprietary
/// `8x`/`Cx`. Real applets accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassStyle {
    #[default]
    InterIndustry,
    Proprietary,
}

/// The CLA byte for `channel` (ISO 7816-4 encodings for channels 0–3 and 4–19).
pub fn cla_for_channel(channel: u8, style: ClassStyle) -> u8 {
    let proprietary = if style == ClassStyle::Proprietary {
        0x80
    } else {
        0x00
    };
    if channel < 4 {
        proprietary | channel
    } else {
        proprietary | 0x40 | (channel - 4).min(0x0F)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.sw == SW_OK
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Maps a status word to the PKCS#11 error a caller should see.
pub fn sw_error(sw: u16, what: &str) -> Error {
    if sw == 0x6881 {
        // Our logical channel is not open any more: the card was reset or power-cycled.
        return Error::channel_lost(format!(
            "{what}: card answered SW 6881 (logical channel not open)"
        ));
    }
    let (rv, meaning) = match sw {
        0x6984 => (
            crate::error::CKR_IOTSAFE_OBJECT_BEING_UPDATED,
            "the object is being updated by a remote-management session",
        ),
        0x6989 => (
            crate::error::CKR_IOTSAFE_OBJECT_CHANGED,
            "the object changed during the operation, or the card's capacity is reached",
        ),
        0x6A84 => (CKR_DEVICE_MEMORY, "not enough memory on the card"),
        0x6982 => (CKR_FUNCTION_REJECTED, "security status not satisfied"),
        0x6985 => (CKR_FUNCTION_FAILED, "conditions of use not satisfied"),
        0x6A82 | 0x6A88 => (CKR_KEY_HANDLE_INVALID, "no such object on the card"),
        0x6D00 | 0x6E00 => (CKR_DEVICE_ERROR, "instruction or class not supported"),
        0x6A80 | 0x6700 | 0x6A86 => (CKR_DEVICE_ERROR, "the card rejected the command's data"),
        0x6400 | 0x6F00 => (CKR_DEVICE_ERROR, "card error"),
        _ => (CKR_DEVICE_ERROR, "unexpected status"),
    };
    Error::new(rv, format!("{what}: card answered SW {sw:04X} ({meaning})"))
}

/// Builds a short APDU.
fn build_apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u8>) -> Result<Vec<u8>> {
    if data.len() > 255 {
        return Err(Error::new(
            CKR_GENERAL_ERROR,
            "APDU data longer than 255 bytes",
        ));
    }
    let mut apdu = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        apdu.push(data.len() as u8);
        apdu.extend_from_slice(data);
    }
    if let Some(le) = le {
        apdu.push(le);
    }
    Ok(apdu)
}

fn split_sw(mut raw: Vec<u8>) -> Result<Response> {
    if raw.len() < 2 {
        return Err(Error::new(
            CKR_DEVICE_ERROR,
            "response shorter than a status word",
        ));
    }
    let sw2 = raw.pop().unwrap_or(0);
    let sw1 = raw.pop().unwrap_or(0);
    Ok(Response {
        data: raw,
        sw: u16::from_be_bytes([sw1, sw2]),
    })
}

/// What an APDU trace may show of a command's data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Full,
    /// The data carries secrets: only its length is logged.
    Redacted,
}

/// One logical channel with the applet selected on it.
pub struct AppletChannel<'a> {
    pipe: &'a mut dyn Transmit,
    channel: u8,
    style: ClassStyle,
    /// A command answered `63CF`: a remote-management session on the card has completed.
    pub remote_update_completed: bool,
}

impl<'a> AppletChannel<'a> {
    pub fn new(pipe: &'a mut dyn Transmit, channel: u8, style: ClassStyle) -> Self {
        AppletChannel {
            pipe,
            channel,
            style,
            remote_update_completed: false,
        }
    }

    fn cla(&self) -> u8 {
        cla_for_channel(self.channel, self.style)
    }

    fn send_raw(&mut self, apdu: &[u8], trace: Trace) -> Result<Response> {
        if log_enabled!(log::Level::Trace) {
            match trace {
                Trace::Full => trace!("ch{} > {}", self.channel, hex(apdu)),
                Trace::Redacted => trace!(
                    "ch{} > {} [{} data bytes redacted]",
                    self.channel,
                    hex(&apdu[..4.min(apdu.len())]),
                    apdu.len().saturating_sub(5)
                ),
            }
        }
        let raw = self.pipe.transmit(apdu)?;
        let resp = split_sw(raw)?;
        if log_enabled!(log::Level::Trace) {
            match trace {
                Trace::Full => trace!("ch{} < {} {:04X}", self.channel, hex(&resp.data), resp.sw),
                Trace::Redacted => trace!(
                    "ch{} < [{} bytes redacted] {:04X}",
                    self.channel,
                    resp.data.len(),
                    resp.sw
                ),
            }
        }
        Ok(resp)
    }

    /// Sends one command and collects its whole answer: `61xx`/`9Fxx` are followed by GET
    /// RESPONSE, `6Cxx` re-sends with the right Le once, `91xx` counts as success.
    pub fn exchange(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<u8>,
        trace: Trace,
    ) -> Result<Response> {
        let cla = self.cla();
        let apdu = build_apdu(cla, ins, p1, p2, data, le)?;
        let mut resp = self.send_raw(&apdu, trace)?;
        if resp.sw >> 8 == 0x6C {
            let apdu = build_apdu(cla, ins, p1, p2, data, Some(resp.sw as u8))?;
            resp = self.send_raw(&apdu, trace)?;
        }
        let mut collected = std::mem::take(&mut resp.data);
        let mut rounds = 0;
        while matches!(resp.sw >> 8, 0x61 | 0x9F) {
            rounds += 1;
            if rounds > MAX_GET_RESPONSE_ROUNDS {
                return Err(Error::new(CKR_DEVICE_ERROR, "card keeps answering 61xx"));
            }
            let get_response = [cla, 0xC0, 0x00, 0x00, resp.sw as u8];
            resp = self.send_raw(&get_response, trace)?;
            collected.append(&mut resp.data);
        }
        if resp.sw >> 8 == 0x91 {
            resp.sw = SW_OK;
        }
        if resp.sw == SW_REMOTE_UPDATE_COMPLETED {
            // Success, and the card's objects may have changed (IoT.04 G4).
            debug!(
                "ch{}: card reports a completed remote-management session",
                self.channel
            );
            self.remote_update_completed = true;
            resp.sw = SW_OK;
        }
        Ok(Response {
            data: collected,
            sw: resp.sw,
        })
    }

    fn exchange_ok(
        &mut self,
        ins: u8,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<u8>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let resp = self.exchange(ins, p1, p2, data, le, Trace::Full)?;
        if resp.is_ok() {
            Ok(resp.data)
        } else {
            Err(sw_error(resp.sw, what))
        }
    }

    /// SELECT by AID, always in the inter-industry class (ISO 7816-4 defines it there; cards
    /// reject `8x A4`). `Ok(false)` when the card does not have that applet.
    pub fn select(&mut self, aid: &[u8]) -> Result<bool> {
        let style = std::mem::replace(&mut self.style, ClassStyle::InterIndustry);
        let resp = self.exchange(0xA4, 0x04, 0x00, aid, None, Trace::Full);
        self.style = style;
        match resp?.sw {
            SW_OK => Ok(true),
            // "Not here" in the ways cards say it.
            0x6A82 | 0x6A81 | 0x6A86 | 0x6999 | 0x6985 | 0x6D00 | 0x6E00 => Ok(false),
            sw => Err(sw_error(sw, "SELECT")),
        }
    }

    /// GET DATA application information.
    pub fn application_info(&mut self) -> Result<AppInfo> {
        let data = self.exchange_ok(0xCB, 0x00, 0x00, &[], Some(0x00), "GET DATA (application)")?;
        Ok(AppInfo::parse(&data))
    }

    /// GET DATA object list, following `6300` continuation pages.
    pub fn object_list(&mut self) -> Result<Vec<ObjectInfo>> {
        let mut data = Vec::new();
        let mut p2 = 0x00;
        for _ in 0..64 {
            let mut resp = self.exchange(0xCB, 0x01, p2, &[], Some(0x00), Trace::Full)?;
            data.append(&mut resp.data);
            match resp.sw {
                SW_OK => {
                    return objects::parse_object_list(&data).map_err(|e| {
                        Error::new(CKR_DEVICE_ERROR, format!("object list: {}", e.0))
                    });
                }
                SW_MORE_DATA => p2 = 0x01,
                sw => return Err(sw_error(sw, "GET DATA (object list)")),
            }
        }
        Err(Error::new(CKR_DEVICE_ERROR, "object list never ends"))
    }

    /// READ PUBLIC KEY: the uncompressed point `04 X Y`.
    pub fn read_public_key(&mut self, key: &ObjectInfo) -> Result<[u8; 65]> {
        let data = self.exchange_ok(
            0xCD,
            0x00,
            0x00,
            &key.reference(),
            Some(0x00),
            "READ PUBLIC KEY",
        )?;
        parse_public_key(&data)
            .ok_or_else(|| Error::new(CKR_DEVICE_ERROR, "READ PUBLIC KEY: not a P-256 point"))
    }

    /// READ FILE in chunks of up to 256 bytes until `size` bytes are read or the card ends.
    pub fn read_file(&mut self, file: &ObjectInfo) -> Result<Vec<u8>> {
        let size = file.file_size.map(usize::from);
        let reference = file.reference();
        let mut content = Vec::new();
        loop {
            if size.is_some_and(|s| content.len() >= s) || content.len() > 0xFFFF {
                break;
            }
            let offset = content.len() as u16;
            let [hi, lo] = offset.to_be_bytes();
            let resp = self.exchange(0xB0, hi, lo, &reference, Some(0x00), Trace::Full)?;
            if !resp.is_ok() {
                // Some cards answer "offset out of range" exactly at the end of the file.
                if size.is_none()
                    && !content.is_empty()
                    && matches!(resp.sw, 0x6A86 | 0x6981 | 0x6B00)
                {
                    break;
                }
                return Err(sw_error(resp.sw, "READ FILE"));
            }
            if resp.data.is_empty() {
                break;
            }
            let got = resp.data.len();
            content.extend_from_slice(&resp.data);
            if size.is_none() && got < 256 {
                break;
            }
        }
        if let Some(s) = size {
            content.truncate(s);
        }
        Ok(content)
    }

    /// GET RANDOM, at most 256 bytes per command.
    pub fn get_random(&mut self, out: &mut [u8]) -> Result<()> {
        for chunk in out.chunks_mut(256) {
            let le = if chunk.len() == 256 {
                0x00
            } else {
                chunk.len() as u8
            };
            let resp = self.exchange(0x84, 0x00, 0x00, &[], Some(le), Trace::Redacted)?;
            if !resp.is_ok() {
                return Err(sw_error(resp.sw, "GET RANDOM"));
            }
            if resp.data.len() < chunk.len() {
                return Err(Error::new(
                    CKR_DEVICE_ERROR,
                    "GET RANDOM returned too few bytes",
                ));
            }
            chunk.copy_from_slice(&resp.data[..chunk.len()]);
        }
        Ok(())
    }

    /// COMPUTE SIGNATURE in pad-and-sign mode: INIT (open) + UPDATE (last block) — 2 APDUs.
    /// Returns raw `r‖s`.
    pub fn sign_hash(
        &mut self,
        key: &ObjectInfo,
        hash_algorithm: u16,
        hash: &[u8],
    ) -> Result<[u8; 64]> {
        let mut init = key.reference();
        tlv::push(&mut init, 0xA1, &[0x03]);
        tlv::push(&mut init, 0x91, &hash_algorithm.to_be_bytes());
        tlv::push(&mut init, 0x92, &[objects::SIGNATURE_ECDSA]);
        let resp = self.exchange(0x2A, 0x00, SIGN_SESSION, &init, None, Trace::Full)?;
        if !resp.is_ok() {
            // A session left open by an earlier, interrupted operation: close it and retry once.
            debug!(
                "COMPUTE SIGNATURE INIT answered {:04X}; closing the session and retrying",
                resp.sw
            );
            let _ = self.exchange(0x2A, 0x01, SIGN_SESSION, &[], None, Trace::Full)?;
            self.exchange_ok(
                0x2A,
                0x00,
                SIGN_SESSION,
                &init,
                None,
                "COMPUTE SIGNATURE INIT",
            )?;
        }
        let mut update = Vec::with_capacity(2 + hash.len());
        tlv::push(&mut update, 0x9E, hash);
        let data = self.exchange_ok(
            0x2B,
            0x80,
            SIGN_SESSION,
            &update,
            Some(0x00),
            "COMPUTE SIGNATURE UPDATE",
        )?;
        parse_signature(&data)
            .ok_or_else(|| Error::new(CKR_DEVICE_ERROR, "COMPUTE SIGNATURE: malformed signature"))
    }
}

impl AppletChannel<'_> {
    /// GENERATE KEY PAIR into a private-key container. Returns the private and public key IDs
    /// as the card reports them (the card may change them) and the new point, when the card
    /// sends it (otherwise the caller reads it with READ PUBLIC KEY).
    pub fn generate_key_pair(&mut self, key: &ObjectInfo) -> Result<GeneratedKeyPair> {
        let data = self.exchange_ok(
            0xB9,
            0x00,
            0x00,
            &key.reference(),
            Some(0x00),
            "GENERATE KEY PAIR",
        )?;
        let mut out = GeneratedKeyPair::default();
        let mut rest = &data[..];
        while let Ok((t, used)) = tlv::read_one(rest) {
            match t.tag {
                0x84 => out.private_id = Some(t.value.to_vec()),
                0x85 => out.public_id = Some(t.value.to_vec()),
                0x34 => out.point = parse_public_key(&rest[..used]),
                _ => {}
            }
            rest = &rest[used..];
        }
        Ok(out)
    }

    /// PUT PUBLIC KEY (init + last-block update): stores a peer point in a public-key
    /// container.
    pub fn put_public_key(&mut self, container: &ObjectInfo, point: &[u8; 65]) -> Result<()> {
        self.exchange_ok(
            0x24,
            0x00,
            PUT_KEY_SESSION,
            &container.reference(),
            None,
            "PUT PUBLIC KEY INIT",
        )?;
        let mut inner = Vec::with_capacity(69);
        tlv::push(&mut inner, 0x86, point);
        let mut template = Vec::with_capacity(71);
        tlv::push(&mut template, 0x49, &inner);
        let mut update = Vec::with_capacity(73);
        tlv::push(&mut update, 0x34, &template);
        self.exchange_ok(
            0xD8,
            0x80,
            PUT_KEY_SESSION,
            &update,
            None,
            "PUT PUBLIC KEY UPDATE",
        )?;
        Ok(())
    }

    /// COMPUTE DH: the raw shared secret (the x-coordinate). Traced redacted.
    pub fn compute_dh(
        &mut self,
        private: &ObjectInfo,
        public: &ObjectInfo,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let mut data = private.reference();
        data.extend_from_slice(&public.reference());
        let resp = self.exchange(0x46, 0x00, 0x00, &data, Some(0x00), Trace::Redacted)?;
        let secret = zeroize::Zeroizing::new(resp.data);
        if resp.sw != SW_OK {
            return Err(sw_error(resp.sw, "COMPUTE DH"));
        }
        if secret.len() != 32 {
            return Err(Error::new(
                CKR_DEVICE_ERROR,
                "COMPUTE DH: not a 32-byte P-256 secret",
            ));
        }
        Ok(secret)
    }
}

/// Where COMPUTE PRF takes its secret from (P1 = mode).
pub enum PrfSecret<'a> {
    /// Mode `00`: the secret travels in the command (`D1`).
    Explicit(&'a [u8]),
    /// Mode `01`: a stored PSK; the card builds the RFC 4279 plain-PSK pre-master.
    Psk(&'a ObjectInfo),
    /// Mode `02`: a stored PSK and the ECDHE secret (`D4`); RFC 5489 pre-master.
    EcdhePsk(&'a ObjectInfo, &'a [u8]),
}

/// COMPUTE HKDF steps (P1): `00` extract, `01` expand, `02` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HkdfStep {
    Extract,
    Expand,
    ExtractAndExpand,
}

/// The input key of COMPUTE HKDF: IKM (extract) or PRK (expand only).
pub enum HkdfKey<'a> {
    Explicit(&'a [u8]),
    Stored(&'a ObjectInfo),
}

impl AppletChannel<'_> {
    fn checked_length(&self, data: &[u8], what: &str) -> Result<()> {
        let room = self.pipe.max_command_data().min(MAX_APDU_DATA);
        if data.len() > room {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                format!("{what}: {} data bytes exceed one APDU ({room})", data.len()),
            ));
        }
        Ok(())
    }

    /// COMPUTE PRF: TLS 1.2 PRF (P_SHA256, or P_SHA384 with `hash` = [`HASH_SHA384`]) of
    /// `label_and_seed`, `len` bytes. Command and answer are traced redacted.
    pub fn compute_prf(
        &mut self,
        secret: PrfSecret<'_>,
        label_and_seed: &[u8],
        hash: u16,
        len: u8,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let mut data = zeroize::Zeroizing::new(Vec::new());
        let mode = match secret {
            PrfSecret::Explicit(s) => {
                tlv::push(&mut data, 0xD1, s);
                0x00
            }
            PrfSecret::Psk(key) => {
                data.extend_from_slice(&key.reference());
                0x01
            }
            PrfSecret::EcdhePsk(key, other) => {
                data.extend_from_slice(&key.reference());
                tlv::push(&mut data, 0xD4, other);
                0x02
            }
        };
        tlv::push(&mut data, 0xD2, label_and_seed);
        tlv::push(&mut data, 0xD3, &[len]);
        if hash != objects::HASH_SHA256 {
            tlv::push(&mut data, 0x91, &hash.to_be_bytes());
        }
        self.checked_length(&data, "COMPUTE PRF")?;
        let resp = self.exchange(0x48, mode, 0x00, &data, Some(0x00), Trace::Redacted)?;
        let out = zeroize::Zeroizing::new(resp.data);
        if resp.sw != SW_OK {
            return Err(sw_error(resp.sw, "COMPUTE PRF"));
        }
        if out.len() != len as usize {
            return Err(Error::new(
                CKR_DEVICE_ERROR,
                format!("COMPUTE PRF: {} bytes instead of {len}", out.len()),
            ));
        }
        Ok(out)
    }

    /// COMPUTE HKDF (RFC 5869) with hash `hash` (tag `91` mask). Extract answers the PRK (hash
    /// length), expand `len` bytes. Command and answer are traced redacted.
    pub fn compute_hkdf(
        &mut self,
        step: HkdfStep,
        key: HkdfKey<'_>,
        salt: &[u8],
        info: &[u8],
        len: u8,
        hash: u16,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let mut data = zeroize::Zeroizing::new(Vec::new());
        match key {
            HkdfKey::Explicit(k) => tlv::push(&mut data, 0xD1, k),
            HkdfKey::Stored(o) => data.extend_from_slice(&o.reference()),
        }
        if step != HkdfStep::Expand && !salt.is_empty() {
            tlv::push(&mut data, 0xD5, salt);
        }
        if step != HkdfStep::Extract {
            tlv::push(&mut data, 0xD2, info);
            tlv::push(&mut data, 0xD3, &[len]);
        }
        tlv::push(&mut data, 0x91, &hash.to_be_bytes());
        self.checked_length(&data, "COMPUTE HKDF")?;
        let p1 = match step {
            HkdfStep::Extract => 0x00,
            HkdfStep::Expand => 0x01,
            HkdfStep::ExtractAndExpand => 0x02,
        };
        let resp = self.exchange(0x4A, p1, 0x00, &data, Some(0x00), Trace::Redacted)?;
        let out = zeroize::Zeroizing::new(resp.data);
        if resp.sw != SW_OK {
            return Err(sw_error(resp.sw, "COMPUTE HKDF"));
        }
        let want = match (step, hash) {
            (HkdfStep::Extract, objects::HASH_SHA384) => 48,
            (HkdfStep::Extract, objects::HASH_SHA512) => 64,
            (HkdfStep::Extract, _) => 32,
            _ => len as usize,
        };
        if out.len() != want {
            return Err(Error::new(
                CKR_DEVICE_ERROR,
                format!("COMPUTE HKDF: {} bytes instead of {want}", out.len()),
            ));
        }
        Ok(out)
    }
}

/// Largest data field of one short APDU.
const MAX_APDU_DATA: usize = 255;

impl AppletChannel<'_> {
    /// STORE DATA of the provisioning profile: one BER-TLV (`tag` = sub-command) split into
    /// blocks (P2 = block number, P1 b8 on the last block; P1 b1 when an answer is expected).
    /// The card applies the sequence on its last block only, so a cut transfer changes nothing.
    /// Returns the last answer (or the first that was not `9000`).
    fn store_data_raw(&mut self, tag: u8, value: &[u8], expect_answer: bool) -> Result<Response> {
        let mut payload = Vec::with_capacity(value.len() + 4);
        tlv::push(&mut payload, tag, value);
        let block_size = self.pipe.max_command_data().clamp(1, MAX_APDU_DATA);
        let blocks: Vec<&[u8]> = payload.chunks(block_size).collect();
        if blocks.len() > 256 {
            return Err(Error::new(
                CKR_DATA_LEN_RANGE,
                "object too large for STORE DATA",
            ));
        }
        // STORE DATA is a GlobalPlatform command: proprietary class.
        let style = std::mem::replace(&mut self.style, ClassStyle::Proprietary);
        let mut last_response = Ok(Response {
            data: Vec::new(),
            sw: SW_OK,
        });
        for (i, block) in blocks.iter().enumerate() {
            let last = i + 1 == blocks.len();
            let p1 = if last { 0x80 } else { 0x00 } | if expect_answer { 0x01 } else { 0x00 };
            let le = if last && expect_answer {
                Some(0x00)
            } else {
                None
            };
            last_response = self.exchange(0xE2, p1, i as u8, block, le, Trace::Full);
            if !matches!(&last_response, Ok(r) if r.is_ok()) {
                break;
            }
        }
        self.style = style;
        last_response
    }

    /// STORE DATA, failing on any status but `9000`.
    pub fn store_data(&mut self, tag: u8, value: &[u8], expect_answer: bool) -> Result<Vec<u8>> {
        let r = self.store_data_raw(tag, value, expect_answer)?;
        if r.is_ok() {
            Ok(r.data)
        } else {
            Err(sw_error(r.sw, "STORE DATA"))
        }
    }

    /// Whether the card implements the provisioning profile: a select of an object that does
    /// not exist answers "not found" on such a card and "unknown instruction" elsewhere. It
    /// changes nothing on the card.
    pub fn supports_provisioning(&mut self) -> Result<bool> {
        let mut probe = Vec::new();
        tlv::push(&mut probe, 0x83, &[0xFF, 0xFE, 0xFD, 0xFC]);
        let r = self.store_data_raw(0x75, &probe, false)?;
        Ok(matches!(r.sw, SW_OK | 0x6A82))
    }
}

/// What GENERATE KEY PAIR answered.
#[derive(Debug, Clone, Default)]
pub struct GeneratedKeyPair {
    pub private_id: Option<Vec<u8>>,
    pub public_id: Option<Vec<u8>>,
    pub point: Option<[u8; 65]>,
}

/// MANAGE CHANNEL open on the basic channel. `Ok(None)` when the card refuses.
pub fn open_channel(pipe: &mut dyn Transmit) -> Result<Option<u8>> {
    let mut basic = AppletChannel::new(pipe, 0, ClassStyle::InterIndustry);
    let resp = basic.exchange(0x70, 0x00, 0x00, &[], Some(0x01), Trace::Full)?;
    match (resp.sw, resp.data.as_slice()) {
        (SW_OK, [ch]) if (1..=19).contains(ch) => Ok(Some(*ch)),
        _ => Ok(None),
    }
}

/// MANAGE CHANNEL close, sent on the basic channel.
pub fn close_channel(pipe: &mut dyn Transmit, channel: u8) -> Result<()> {
    let mut basic = AppletChannel::new(pipe, 0, ClassStyle::InterIndustry);
    basic.exchange(0x70, 0x80, channel, &[], None, Trace::Full)?;
    Ok(())
}

/// What GET DATA (application) tells.
#[derive(Debug, Clone, Default)]
pub struct AppInfo {
    pub version: Option<u8>,
    pub identifier: Vec<u8>,
    pub max_sessions: Option<u8>,
    /// Cryptographic functions (tag `90`, or `61` on some applets): bit 1 signature, 2 key
    /// generation, 4 key agreement, 8 key derivation.
    pub functions: Option<u8>,
    /// Key-derivation algorithms (tag `94`): bit 1 TLS 1.2 PRF, 2 HKDF.
    pub key_derivation: Option<u8>,
}

impl AppInfo {
    /// Whether the applet offers a function (unknown: assume it does).
    pub fn offers(&self, function_bit: u8) -> bool {
        self.functions.is_none_or(|f| f & function_bit != 0)
    }

    /// Whether the applet offers a key-derivation algorithm (tag `94` bit), with the key
    /// derivation function (unknown: assume it does).
    pub fn offers_derivation(&self, algorithm_bit: u8) -> bool {
        self.offers(objects::FUNCTION_KEY_DERIVATION)
            && self.key_derivation.is_none_or(|k| k & algorithm_bit != 0)
    }
}

impl AppInfo {
    fn parse(data: &[u8]) -> AppInfo {
        let mut info = AppInfo::default();
        // Tolerant: one applet sends a wrong length for tag 11; read what parses.
        let mut rest = data;
        while let Ok((t, used)) = tlv::read_one(rest) {
            match t.tag {
                0x10 => info.version = t.value.first().copied(),
                0x11 => info.identifier = t.value.to_vec(),
                0xB7 => info.max_sessions = t.value.first().copied(),
                0x90 | 0x61 => info.functions = t.value.first().copied(),
                0x94 => info.key_derivation = t.value.first().copied(),
                _ => {}
            }
            rest = &rest[used..];
        }
        info
    }
}

/// `34 45 49 43 86 41 04 X Y` (or a bare `04 X Y`) → the point.
pub fn parse_public_key(data: &[u8]) -> Option<[u8; 65]> {
    let point = if data.first() == Some(&0x34) {
        let (outer, _) = tlv::read_one(data).ok()?;
        let (inner, _) = tlv::read_one(outer.value).ok()?;
        if inner.tag != 0x49 {
            return None;
        }
        tlv::parse_all(inner.value)
            .ok()?
            .into_iter()
            .find(|t| t.tag == 0x86)?
            .value
    } else {
        data
    };
    if point.len() == 65 && point[0] == 0x04 {
        point.try_into().ok()
    } else {
        None
    }
}

/// `33 40 r s`, `33 00 40 r s`, or a DER ECDSA-Sig-Value inside `33` → raw `r‖s`.
pub fn parse_signature(data: &[u8]) -> Option<[u8; 64]> {
    if data.first() != Some(&0x33) {
        return None;
    }
    let value: &[u8] = match data.get(1..3) {
        // Two-byte length without the 82 prefix, as some cards send it.
        Some([0x00, len]) if data.len() == 3 + *len as usize => &data[3..],
        _ => tlv::read_one(data).ok()?.0.value,
    };
    if value.len() == 64 {
        return value.try_into().ok();
    }
    der_signature_to_raw(value)
}

fn der_signature_to_raw(der: &[u8]) -> Option<[u8; 64]> {
    let (seq, _) = tlv::read_one(der).ok()?;
    if seq.tag != 0x30 {
        return None;
    }
    let ints = tlv::parse_all(seq.value).ok()?;
    if ints.len() != 2 || ints.iter().any(|t| t.tag != 0x02) {
        return None;
    }
    let mut out = [0u8; 64];
    for (i, int) in ints.iter().enumerate() {
        let v = int.value;
        let v = match v.iter().position(|&b| b != 0) {
            Some(p) => &v[p..],
            None => &[][..],
        };
        if v.len() > 32 {
            return None;
        }
        out[i * 32 + 32 - v.len()..(i + 1) * 32].copy_from_slice(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cla_encodings() {
        assert_eq!(cla_for_channel(0, ClassStyle::InterIndustry), 0x00);
        assert_eq!(cla_for_channel(3, ClassStyle::InterIndustry), 0x03);
        assert_eq!(cla_for_channel(1, ClassStyle::Proprietary), 0x81);
        assert_eq!(cla_for_channel(4, ClassStyle::InterIndustry), 0x40);
        assert_eq!(cla_for_channel(19, ClassStyle::InterIndustry), 0x4F);
        assert_eq!(cla_for_channel(19, ClassStyle::Proprietary), 0xCF);
    }

    #[test]
    fn signature_forms() {
        let rs: Vec<u8> = (0..64).collect();
        let one = [&[0x33, 0x40][..], &rs].concat();
        let two = [&[0x33, 0x00, 0x40][..], &rs].concat();
        let ber = [&[0x33, 0x81, 0x40][..], &rs].concat();
        for form in [one, two, ber] {
            assert_eq!(parse_signature(&form).unwrap().to_vec(), rs);
        }
        // DER with a leading zero on r and a short s.
        let mut der = vec![0x30, 0x00, 0x02, 0x21, 0x00];
        der.extend_from_slice(&[0x80; 32]);
        der.extend_from_slice(&[0x02, 0x02, 0x01, 0x02]);
        der[1] = (der.len() - 2) as u8;
        let wrapped = [&[0x33, der.len() as u8][..], &der].concat();
        let raw = parse_signature(&wrapped).unwrap();
        assert_eq!(&raw[..32], &[0x80; 32]);
        assert_eq!(&raw[62..], &[1, 2]);
        assert!(parse_signature(&[0x33, 0x10, 1, 2]).is_none());
        assert!(parse_signature(&[]).is_none());
    }

    #[test]
    fn public_key_forms() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let full = [&[0x34, 0x45, 0x49, 0x43, 0x86, 0x41][..], &point].concat();
        assert_eq!(parse_public_key(&full).unwrap().to_vec(), point);
        assert_eq!(parse_public_key(&point).unwrap().to_vec(), point);
        assert!(parse_public_key(&full[..20]).is_none());
    }

    struct Scripted(Vec<(Vec<u8>, Vec<u8>)>);
    impl Transmit for Scripted {
        fn transmit(
            &mut self,
            command: &[u8],
        ) -> std::result::Result<Vec<u8>, crate::transport::TransportError> {
            let (expect, answer) = self.0.remove(0);
            assert_eq!(command, &expect[..]);
            Ok(answer)
        }
    }

    #[test]
    fn get_response_and_wrong_le_are_handled_once_here() {
        let mut pipe = Scripted(vec![
            (vec![0x01, 0xCD, 0, 0, 3, 0x85, 1, 1, 0], vec![0x6C, 0x47]),
            (
                vec![0x01, 0xCD, 0, 0, 3, 0x85, 1, 1, 0x47],
                vec![0x61, 0x02],
            ),
            (vec![0x01, 0xC0, 0, 0, 2], vec![0xAA, 0x61, 0x01]),
            (vec![0x01, 0xC0, 0, 0, 1], vec![0xBB, 0x90, 0x00]),
        ]);
        let mut ch = AppletChannel::new(&mut pipe, 1, ClassStyle::InterIndustry);
        let resp = ch
            .exchange(0xCD, 0, 0, &[0x85, 1, 1], Some(0), Trace::Full)
            .unwrap();
        assert_eq!(resp.data, vec![0xAA, 0xBB]);
        assert!(resp.is_ok());
    }

    #[test]
    fn endless_61xx_is_an_error() {
        struct Endless;
        impl Transmit for Endless {
            fn transmit(
                &mut self,
                _: &[u8],
            ) -> std::result::Result<Vec<u8>, crate::transport::TransportError> {
                Ok(vec![0x61, 0x10])
            }
        }
        let mut pipe = Endless;
        let mut ch = AppletChannel::new(&mut pipe, 1, ClassStyle::InterIndustry);
        let err = ch
            .exchange(0x84, 0, 0, &[], Some(0), Trace::Full)
            .unwrap_err();
        assert_eq!(err.rv(), CKR_DEVICE_ERROR);
    }
}
