//! The module in this process: its `C_*` functions called directly, with the simulator
//! library's cards as its readers (plugged in by [`super::sim_reader`]).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki_sys::*;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, SharedCard};
use sha2::{Digest, Sha256};

pub use super::sim_reader::{READER_TIMEOUT, SimReader};
use super::sim_reader::{plug_in_sim_readers, unplug_sim_readers};

static SERIAL: Mutex<()> = Mutex::new(());

/// The lock every in-process user of the (one, global) module holds: `Harness` takes it; a
/// test that initialises the module otherwise (e.g. with a modem configuration) takes it here.
pub fn module_lock() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running module over simulated cards. Dropping it finalizes the module.
pub struct Harness {
    pub readers: Vec<SimReader>,
    _guard: MutexGuard<'static, ()>,
}

impl Harness {
    /// One reader with the default profile and the given card options.
    pub fn new(options: CardOptions) -> Harness {
        Self::with_cards(vec![SharedCard::from_profile(
            iotsafe_sim::default_profile(),
            options,
        )])
    }

    pub fn default() -> Harness {
        Self::new(CardOptions::default())
    }

    pub fn with_cards(cards: Vec<SharedCard>) -> Harness {
        let guard = module_lock();
        let readers: Vec<SimReader> = cards
            .into_iter()
            .enumerate()
            .map(|(i, card)| {
                card.faults().set_mute_limit(READER_TIMEOUT);
                SimReader {
                    name: format!("Sim Reader {i:02}"),
                    card,
                    present: Arc::new(AtomicBool::new(true)),
                    reset_pending: Arc::new(AtomicBool::new(false)),
                    card_nanos: Arc::new(AtomicU64::new(0)),
                }
            })
            .collect();
        plug_in_sim_readers(&readers);
        // Clean slate even if an earlier test failed half-way.
        unsafe { C_Finalize(std::ptr::null_mut()) };
        Harness {
            readers,
            _guard: guard,
        }
    }

    pub fn card(&self) -> &SharedCard {
        &self.readers[0].card
    }

    /// C_Initialize(NULL) and open a session on slot 0.
    pub fn init_and_open(&self) -> CK_SESSION_HANDLE {
        assert_eq!(unsafe { C_Initialize(std::ptr::null_mut()) }, CKR_OK);
        open_session(0)
    }

    /// APDUs the card saw since the last call.
    pub fn apdus(&self) -> u64 {
        let n = self.card().stats().total;
        self.card().reset_stats();
        n
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        unsafe { C_Finalize(std::ptr::null_mut()) };
        unplug_sim_readers();
    }
}

pub fn open_session(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut h: CK_SESSION_HANDLE = 0;
    let rv = unsafe { C_OpenSession(slot, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut h) };
    assert_eq!(rv, CKR_OK, "C_OpenSession");
    h
}

/// A read-write session on `slot`.
pub fn open_rw_session(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut h: CK_SESSION_HANDLE = 0;
    let rv = unsafe {
        C_OpenSession(
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            std::ptr::null_mut(),
            None,
            &mut h,
        )
    };
    assert_eq!(rv, CKR_OK, "C_OpenSession (read-write)");
    h
}

/// Initialises the module with `config` (the module's TOML configuration), as `C_Initialize`
/// does with the configuration file.
pub fn initialize_with_config(config: &str) {
    let config = iotsafe_pkcs11::config::Config::parse(config, "the test").expect("configuration");
    iotsafe_pkcs11::token::initialize_with(config).expect("initialise with the configuration");
}

pub fn find(session: CK_SESSION_HANDLE, template: &mut [CK_ATTRIBUTE]) -> Vec<CK_OBJECT_HANDLE> {
    unsafe {
        assert_eq!(
            C_FindObjectsInit(session, template.as_mut_ptr(), template.len() as CK_ULONG),
            CKR_OK
        );
        let mut out = Vec::new();
        loop {
            let mut buf = [0 as CK_OBJECT_HANDLE; 3];
            let mut n: CK_ULONG = 0;
            assert_eq!(C_FindObjects(session, buf.as_mut_ptr(), 3, &mut n), CKR_OK);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        assert_eq!(C_FindObjectsFinal(session), CKR_OK);
        out
    }
}

pub fn attr(t: CK_ATTRIBUTE_TYPE, value: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: value.as_mut_ptr() as *mut _,
        ulValueLen: value.len() as CK_ULONG,
    }
}

pub fn class_attr(class: &mut CK_OBJECT_CLASS) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: CKA_CLASS,
        pValue: class as *mut CK_OBJECT_CLASS as *mut _,
        ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
    }
}

/// Reads one attribute value (size query, then fetch).
pub fn get_attr(
    session: CK_SESSION_HANDLE,
    obj: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    unsafe {
        let mut a = CK_ATTRIBUTE {
            type_: t,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        let rv = C_GetAttributeValue(session, obj, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr() as *mut _;
        let rv = C_GetAttributeValue(session, obj, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        buf.truncate(a.ulValueLen as usize);
        Ok(buf)
    }
}

/// The handle of the one object of `class` with CKA_LABEL `label`.
pub fn object_by_label(
    session: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> CK_OBJECT_HANDLE {
    let mut class = class;
    let mut label = label.as_bytes().to_vec();
    let mut t = [class_attr(&mut class), attr(CKA_LABEL, &mut label)];
    let found = find(session, &mut t);
    assert_eq!(
        found.len(),
        1,
        "objects with that class and label: {found:?}"
    );
    found[0]
}

/// The private key labelled "client" on the default card.
pub fn client_key(session: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    object_by_label(session, CKO_PRIVATE_KEY, "client")
}

pub fn mech(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    }
}

/// Signs `data` in one C_Sign call (with a size query first, as most callers do).
pub fn sign(
    session: CK_SESSION_HANDLE,
    m: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    unsafe {
        let mut mm = mech(m);
        let rv = C_SignInit(session, &mut mm, key);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut len: CK_ULONG = 0;
        let rv = C_Sign(
            session,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            std::ptr::null_mut(),
            &mut len,
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut sig = vec![0u8; len as usize];
        let rv = C_Sign(
            session,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            sig.as_mut_ptr(),
            &mut len,
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        sig.truncate(len as usize);
        Ok(sig)
    }
}

/// `threads` threads, each with its own session on slot 0, signing `per_thread` messages of
/// its own with the client key; every signature must verify.
pub fn sign_from_threads(card: &SharedCard, threads: usize, per_thread: usize) {
    let point = profile_client_point(card);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let point = point.clone();
            scope.spawn(move || {
                let s = open_session(0);
                let key = client_key(s);
                for i in 0..per_thread {
                    let msg = format!("thread {t} message {i}");
                    let sig = sign(s, CKM_ECDSA_SHA256, key, msg.as_bytes()).unwrap();
                    assert!(p256_verify(&point, &Sha256::digest(msg.as_bytes()), &sig));
                }
            });
        }
    });
}

/// The client key pair's public point from the simulator's profile.
pub fn profile_client_point(card: &SharedCard) -> Vec<u8> {
    let profile = card.profile();
    let pk = profile
        .public_keys
        .iter()
        .find(|k| k.id == [0x01])
        .expect("public key 01 in the default profile");
    pk.point.clone().expect("filled public key")
}

/// Verifies raw r‖s over `prehash` with p256 against a SEC1 point. `prehash` may have any
/// length: p256 turns it into the number to verify by the ECDSA rule (bits2int: the leftmost
/// 256 bits of a longer input; a shorter one read as a big-endian number, i.e. zero-padded on
/// the left), independently of the module's own copy of that rule.
pub fn p256_verify(point: &[u8], prehash: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("valid point");
    let sig = p256::ecdsa::Signature::from_slice(sig).expect("64-byte signature");
    vk.verify_prehash(prehash, &sig).is_ok()
}
