//! The fuzz targets' bodies: every parser of the module that reads bytes from the card or the
//! modem, and the attribute templates a caller passes. Shared by the `cargo fuzz` targets in
//! `fuzz_targets/` and, on stable Rust, by `tests/fuzz_regressions.rs`, which replays the
//! seed corpus and every crash ever found (`fuzz/regressions/<target>/`).
//!
//! A body must never panic on any input: the module's own code catches nothing here.

use std::sync::{Arc, Mutex, OnceLock};

use cryptoki_sys::*;
use iotsafe_pkcs11::applet::{
    self, AppletChannel, AppletSettings, ClassStyle, ConnectedCard, ContentCache, ObjectInfo,
    objects, tlv,
};
use iotsafe_pkcs11::config::Config;
use iotsafe_pkcs11::ffi::*;
use iotsafe_pkcs11::token::handles::HandleAllocator;
use iotsafe_pkcs11::token::object::{CardObject, build_objects};
use iotsafe_pkcs11::token::slot::Token;
use iotsafe_pkcs11::transport::{
    CardConnection, ChannelRoute, ReaderSource, Transmit, TransportError, Turn,
};

/// Target names, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: &[&str] = &[
    "tlv",
    "object_list",
    "public_key",
    "signature",
    "at_answer",
    "mbim_reply",
    "qmi_frame",
    "apdu_codec",
    "card_read",
    "attribute_template",
    "config",
];

/// Runs the body of target `name` (for the regression replay).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "tlv" => tlv_target(data),
        "object_list" => object_list(data),
        "public_key" => public_key(data),
        "signature" => signature(data),
        "at_answer" => at_answer(data),
        "mbim_reply" => mbim_reply(data),
        "qmi_frame" => qmi_frame(data),
        "apdu_codec" => apdu_codec(data),
        "card_read" => card_read(data),
        "attribute_template" => attribute_template(data),
        "config" => config(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// BER-TLV as the applet sends it.
pub fn tlv_target(data: &[u8]) {
    if let Ok(all) = tlv::parse_all(data) {
        // Re-encoding what parsed gives the same TLVs back.
        let mut again = Vec::new();
        for t in &all {
            tlv::push(&mut again, t.tag, t.value);
        }
        let reparsed = tlv::parse_all(&again).expect("re-encoded TLVs parse");
        assert_eq!(reparsed, all);
    }
    let _ = tlv::read_one(data);
}

/// GET DATA object list → objects → PKCS#11 objects (labels, IDs, certificates by DER parse).
pub fn object_list(data: &[u8]) {
    // The first byte splits the input: object list, then file content / public key bytes.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(rest.len());
    let (list, extra) = rest.split_at(rest.len() - cut);
    let _ = objects::parse_single_object(list);
    let Ok(infos) = objects::parse_object_list(list) else {
        return;
    };
    let point = applet::parse_public_key(extra);
    let card_objects: Vec<CardObject> = infos
        .into_iter()
        .map(|info| CardObject {
            point,
            content: Some(extra.to_vec()),
            info,
        })
        .collect();
    let mut next = 0;
    let objects = build_objects(&card_objects, &[], |_, _| {
        next += 1;
        next
    });
    for o in &objects {
        for t in [
            CKA_CLASS,
            CKA_ID,
            CKA_LABEL,
            CKA_VALUE,
            CKA_EC_POINT,
            CKA_SUBJECT,
        ] {
            let _ = o.attribute(t);
        }
    }
}

/// READ PUBLIC KEY answers.
pub fn public_key(data: &[u8]) {
    if let Some(p) = applet::parse_public_key(data) {
        assert_eq!(p[0], 0x04);
    }
}

/// COMPUTE SIGNATURE answers.
pub fn signature(data: &[u8]) {
    let _ = applet::parse_signature(data);
}

/// `+CSIM:` / `+CGLA:` information lines from the modem.
pub fn at_answer(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Some(apdu) = iotsafe_pkcs11::transport::at::parse_apdu_answer_for_fuzzing(&line) {
        assert!(apdu.len() >= 2, "an answer holds at least a status word");
    }
}

/// The MBIM control device's byte stream (fragments, garbage, every UICC answer).
pub fn mbim_reply(data: &[u8]) {
    let replies = iotsafe_pkcs11::transport::mbim::read_replies_for_fuzzing(data);
    // A reply is at least a 12-byte header (and each byte belongs to at most one).
    assert!(
        replies * 12 <= data.len(),
        "{replies} replies from {} bytes",
        data.len()
    );
}

/// The QMI control device's byte stream (QMUX frames, TLVs, results, APDU answers).
pub fn qmi_frame(data: &[u8]) {
    let frames = iotsafe_pkcs11::transport::qmi::read_frames_for_fuzzing(data);
    // A frame is at least 6 bytes.
    assert!(
        frames * 6 <= data.len(),
        "{frames} frames from {} bytes",
        data.len()
    );
}

/// A card whose answers come from the fuzz input: a length byte (`FF` = two length bytes
/// follow, big-endian), then that many bytes, repeated; then `6D00` to everything.
struct Scripted<'a> {
    data: &'a [u8],
    sent: usize,
}

impl Transmit for Scripted<'_> {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.sent += 1;
        if self.sent > 4096 {
            return Err(TransportError::Timeout);
        }
        // Past the script: "instruction not supported", as a card without that command.
        let Some((&len, mut rest)) = self.data.split_first() else {
            return Ok(vec![0x6D, 0x00]);
        };
        let mut len = len as usize;
        if len == 0xFF && rest.len() >= 2 {
            len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            rest = &rest[2..];
        }
        let len = len.min(rest.len());
        let (answer, rest) = rest.split_at(len);
        self.data = rest;
        Ok(answer.to_vec())
    }
}

/// Every applet command of the module against scripted answers (61xx, 6Cxx, 6300 paging,
/// short and long answers).
pub fn apdu_codec(data: &[u8]) {
    let mut pipe = Scripted { data, sent: 0 };
    let _ = applet::open_channel(&mut pipe);
    let mut ch = AppletChannel::new(&mut pipe, 1, ClassStyle::InterIndustry);
    let _ = ch.select(&applet::GSMA_AID);
    let _ = ch.application_info();
    let list = ch.object_list().unwrap_or_default();
    let key = ObjectInfo {
        id: Some(vec![1]),
        ..Default::default()
    };
    let _ = ch.read_public_key(&key);
    let file = ObjectInfo {
        class: Some(objects::ObjectClass::File),
        id: Some(vec![2]),
        file_size: Some(700),
        ..Default::default()
    };
    let _ = ch.read_file(&file);
    let _ = ch.read_file(&ObjectInfo {
        file_size: None,
        ..file
    });
    let mut random = [0u8; 300];
    let _ = ch.get_random(&mut random);
    let _ = ch.sign_hash(&key, objects::HASH_SHA256, &[0x5A; 32]);
    for info in list.iter().take(4) {
        let _ = ch.read_public_key(info);
    }
}

struct ScriptedConnection {
    data: Vec<u8>,
    /// Bytes of `data` answered so far.
    consumed: usize,
}

/// One transaction on the scripted card: answers continue where the last one stopped.
struct ScriptedTransaction<'a> {
    conn: &'a mut ScriptedConnection,
    sent: usize,
}

impl Transmit for ScriptedTransaction<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut pipe = Scripted {
            data: &self.conn.data[self.conn.consumed..],
            sent: self.sent,
        };
        let answer = pipe.transmit(command);
        self.sent = pipe.sent;
        self.conn.consumed = self.conn.data.len() - pipe.data.len();
        answer
    }
}

impl Turn for ScriptedTransaction<'_> {
    fn set_route(&mut self, _route: ChannelRoute) -> Result<(), TransportError> {
        Ok(())
    }
}

impl CardConnection for ScriptedConnection {
    fn transaction(&mut self, _route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        Ok(Box::new(ScriptedTransaction {
            conn: self,
            sent: 0,
        }))
    }
    fn is_present(&mut self) -> bool {
        true
    }
    fn disconnect(self: Box<Self>) {}
}

/// The whole first contact with a card: channel, SELECT, application info, object list,
/// public keys and files, PKCS#11 objects built from them.
pub fn card_read(data: &[u8]) {
    let _ = card_read_objects(data);
}

/// The number of PKCS#11 objects the module builds from the card conversation `data`.
pub fn card_read_objects(data: &[u8]) -> usize {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(|| Config::parse("", "fuzz").expect("default config"));
    let conn = Box::new(ScriptedConnection {
        data: data.to_vec(),
        consumed: 0,
    });
    let settings = AppletSettings::from_config(config);
    let cache = Arc::new(ContentCache::new(false, None));
    match ConnectedCard::open(conn, &settings, &cache, "fuzz reader") {
        Ok(Some(card)) => {
            let handles = Arc::new(HandleAllocator::new());
            let token = Token::new(card, handles, config, "fuzz reader");
            let objects = token.objects();
            for o in &objects {
                let _ = o.attribute(CKA_LABEL);
                let _ = o.attribute(CKA_VALUE);
            }
            objects.len()
        }
        _ => 0,
    }
}

/// The module's configuration (file or `C_Initialize`'s `pReserved`).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(c) = Config::parse(text, "fuzz")
    {
        let _ = AppletSettings::from_config(&c);
    }
}

/// The simulated card behind the in-process module (one per process, initialised once).
struct SimSource(iotsafe_sim::SharedCard);

struct SimConnection(iotsafe_sim::SharedCard);

struct SimPipe<'a>(&'a iotsafe_sim::SharedCard);

impl Transmit for SimPipe<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.0.transmit(command))
    }
}

impl Turn for SimPipe<'_> {
    fn set_route(&mut self, _route: ChannelRoute) -> Result<(), TransportError> {
        Ok(())
    }
}

impl CardConnection for SimConnection {
    fn transaction(&mut self, _route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        Ok(Box::new(SimPipe(&self.0)))
    }
    fn reconnect(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn is_present(&mut self) -> bool {
        true
    }
    fn disconnect(self: Box<Self>) {}
}

impl ReaderSource for SimSource {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        Ok(vec!["fuzz reader".into()])
    }
    fn connect(&self, _reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        Ok(Some(Box::new(SimConnection(self.0.clone()))))
    }
    fn card_present(&self, _reader: &str) -> bool {
        true
    }
}

struct Module {
    ro: CK_SESSION_HANDLE,
    rw: CK_SESSION_HANDLE,
    handles: Vec<CK_OBJECT_HANDLE>,
}

fn module() -> &'static Mutex<Module> {
    static MODULE: OnceLock<Mutex<Module>> = OnceLock::new();
    MODULE.get_or_init(|| {
        let card = iotsafe_sim::SharedCard::from_profile(
            iotsafe_sim::default_profile(),
            iotsafe_sim::CardOptions::default(),
        );
        iotsafe_pkcs11::transport::set_reader_source_override(Some(Arc::new(SimSource(card))));
        unsafe {
            assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
            let mut ro = 0;
            let mut rw = 0;
            assert_eq!(
                C_OpenSession(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut ro),
                CKR_OK
            );
            assert_eq!(
                C_OpenSession(
                    0,
                    CKF_SERIAL_SESSION | CKF_RW_SESSION,
                    std::ptr::null_mut(),
                    None,
                    &mut rw
                ),
                CKR_OK
            );
            assert_eq!(C_FindObjectsInit(ro, std::ptr::null_mut(), 0), CKR_OK);
            let mut handles = vec![0; 64];
            let mut n = 0;
            assert_eq!(C_FindObjects(ro, handles.as_mut_ptr(), 64, &mut n), CKR_OK);
            assert_eq!(C_FindObjectsFinal(ro), CKR_OK);
            handles.truncate(n as usize);
            Mutex::new(Module { ro, rw, handles })
        }
    })
}

/// Attribute types worth hitting often; the rest of the space comes from the raw input.
const TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_KEY_TYPE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_DERIVE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_CERTIFICATE_TYPE,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_APPLICATION,
    CKA_OBJECT_ID,
    CKA_MODIFIABLE,
    CKA_PUBLIC_KEY_INFO,
    CKA_CHECK_VALUE,
    CKA_VENDOR_DEFINED,
    CKA_VENDOR_DEFINED | 1,
    CKA_VENDOR_DEFINED | 2,
    CKA_VENDOR_DEFINED | 3,
];

/// Attribute templates from the fuzz input: each attribute is a type selector byte (a known
/// type, or 8 raw bytes), a length byte and that many value bytes. Values live in buffers of
/// exactly their length (the C contract); what varies is everything the caller controls.
fn template_from(data: &[u8]) -> (Vec<CK_ATTRIBUTE>, Vec<Vec<u8>>) {
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut types = Vec::new();
    let mut rest = data;
    while let Some((&sel, r)) = rest.split_first() {
        rest = r;
        let t = if (sel as usize) < TYPES.len() {
            TYPES[sel as usize]
        } else if sel == 0xFF && rest.len() >= 8 {
            let (raw, r) = rest.split_at(8);
            rest = r;
            CK_ATTRIBUTE_TYPE::from_le_bytes(raw.try_into().unwrap_or_default())
        } else {
            sel as CK_ATTRIBUTE_TYPE
        };
        let Some((&len, r)) = rest.split_first() else {
            break;
        };
        rest = r;
        let len = (len as usize).min(rest.len());
        let (v, r) = rest.split_at(len);
        rest = r;
        types.push(t);
        values.push(v.to_vec());
        if types.len() >= 32 {
            break;
        }
    }
    let attrs = types
        .iter()
        .zip(values.iter_mut())
        .map(|(t, v)| CK_ATTRIBUTE {
            type_: *t,
            pValue: if v.is_empty() {
                std::ptr::null_mut()
            } else {
                v.as_mut_ptr() as *mut _
            },
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    (attrs, values)
}

/// Templates through `C_FindObjectsInit`, `C_GetAttributeValue` (size queries and buffers of
/// any size), `C_CreateObject`, `C_SetAttributeValue`, `C_CopyObject` and
/// `C_GenerateKeyPair` on the in-process module.
pub fn attribute_template(data: &[u8]) {
    let m = module().lock().unwrap_or_else(|e| e.into_inner());
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let (mut attrs, _values) = template_from(data);
    let n = attrs.len() as CK_ULONG;
    let object = m
        .handles
        .get(which as usize % m.handles.len().max(1))
        .copied()
        .unwrap_or(0);
    unsafe {
        match which % 6 {
            0 => {
                if C_FindObjectsInit(m.ro, attrs.as_mut_ptr(), n) == CKR_OK {
                    let mut found = [0; 16];
                    let mut count = 0;
                    let _ = C_FindObjects(m.ro, found.as_mut_ptr(), 16, &mut count);
                    assert!(count <= 16);
                    assert_eq!(C_FindObjectsFinal(m.ro), CKR_OK);
                }
            }
            1 => {
                // Size query first, then buffers as long as the input said (possibly short).
                for a in attrs.iter_mut() {
                    a.pValue = std::ptr::null_mut();
                }
                let _ = C_GetAttributeValue(m.ro, object, attrs.as_mut_ptr(), n);
                let (mut attrs, _values) = template_from(data);
                let rv = C_GetAttributeValue(m.ro, object, attrs.as_mut_ptr(), n);
                if rv == CKR_OK {
                    for (a, v) in attrs.iter().zip(&_values) {
                        assert!(a.ulValueLen as usize <= v.len() || a.pValue.is_null());
                    }
                }
            }
            2 => {
                let mut h = 0;
                let _ = C_CreateObject(m.rw, attrs.as_mut_ptr(), n, &mut h);
                let _ = C_CreateObject(m.ro, attrs.as_mut_ptr(), n, &mut h);
            }
            3 => {
                let _ = C_SetAttributeValue(m.rw, object, attrs.as_mut_ptr(), n);
            }
            4 => {
                let mut h = 0;
                let _ = C_CopyObject(m.ro, object, attrs.as_mut_ptr(), n, &mut h);
            }
            _ => {
                // Templates of a key pair generation, refused or not: parsed all the same.
                let mut mech = CK_MECHANISM {
                    mechanism: CKM_EC_KEY_PAIR_GEN,
                    pParameter: std::ptr::null_mut(),
                    ulParameterLen: 0,
                };
                let half = attrs.len() / 2;
                let (public, private) = attrs.split_at_mut(half);
                let (mut hp, mut hk) = (0, 0);
                let _ = C_GenerateKeyPair(
                    m.rw,
                    &mut mech,
                    public.as_mut_ptr(),
                    public.len() as CK_ULONG,
                    private.as_mut_ptr(),
                    private.len() as CK_ULONG,
                    &mut hp,
                    &mut hk,
                );
            }
        }
    }
}
