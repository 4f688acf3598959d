//! One normalised line per check: `<id> | <call, arguments in short> | <CK_RV name> | <output>`.
//! Lines are printed as they are made, so a module that crashes leaves its last good line.

use std::io::Write;

use cryptoki_sys::*;

use crate::names::rv_name;

#[derive(Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub echo: bool,
}

impl Report {
    pub fn new(echo: bool) -> Report {
        Report {
            lines: Vec::new(),
            echo,
        }
    }

    pub fn check(&mut self, id: &str, call: &str, rv: CK_RV, out: impl AsRef<str>) {
        let out = out.as_ref();
        let line = if out.is_empty() {
            format!("{id} | {call} | {}", rv_name(rv))
        } else {
            format!("{id} | {call} | {} | {out}", rv_name(rv))
        };
        self.push(line);
    }

    /// A line with no CK_RV (a derived fact, e.g. "symbol exported").
    pub fn fact(&mut self, id: &str, what: &str, value: impl AsRef<str>) {
        self.push(format!("{id} | {what} | {}", value.as_ref()));
    }

    pub fn push(&mut self, line: String) {
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.lines.push(line);
    }
}

/// The id of a report line (text before the first " | ").
pub fn line_id(line: &str) -> &str {
    line.split(" | ").next().unwrap_or(line).trim()
}

/// Names of the set bits of `flags` (unknown bits in hex).
pub fn flag_names(flags: CK_FLAGS, table: &[(CK_FLAGS, &str)]) -> String {
    let mut names = Vec::new();
    let mut rest = flags;
    for &(bit, name) in table {
        if flags & bit == bit && bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

pub const SLOT_FLAGS: &[(CK_FLAGS, &str)] = &[
    (CKF_TOKEN_PRESENT, "TOKEN_PRESENT"),
    (CKF_REMOVABLE_DEVICE, "REMOVABLE_DEVICE"),
    (CKF_HW_SLOT, "HW_SLOT"),
];

pub const TOKEN_FLAGS: &[(CK_FLAGS, &str)] = &[
    (CKF_RNG, "RNG"),
    (CKF_WRITE_PROTECTED, "WRITE_PROTECTED"),
    (CKF_LOGIN_REQUIRED, "LOGIN_REQUIRED"),
    (CKF_USER_PIN_INITIALIZED, "USER_PIN_INITIALIZED"),
    (CKF_RESTORE_KEY_NOT_NEEDED, "RESTORE_KEY_NOT_NEEDED"),
    (CKF_CLOCK_ON_TOKEN, "CLOCK_ON_TOKEN"),
    (
        CKF_PROTECTED_AUTHENTICATION_PATH,
        "PROTECTED_AUTHENTICATION_PATH",
    ),
    (CKF_DUAL_CRYPTO_OPERATIONS, "DUAL_CRYPTO_OPERATIONS"),
    (CKF_TOKEN_INITIALIZED, "TOKEN_INITIALIZED"),
    (CKF_SECONDARY_AUTHENTICATION, "SECONDARY_AUTHENTICATION"),
    (CKF_USER_PIN_COUNT_LOW, "USER_PIN_COUNT_LOW"),
    (CKF_USER_PIN_FINAL_TRY, "USER_PIN_FINAL_TRY"),
    (CKF_USER_PIN_LOCKED, "USER_PIN_LOCKED"),
    (CKF_USER_PIN_TO_BE_CHANGED, "USER_PIN_TO_BE_CHANGED"),
    (CKF_SO_PIN_COUNT_LOW, "SO_PIN_COUNT_LOW"),
    (CKF_SO_PIN_FINAL_TRY, "SO_PIN_FINAL_TRY"),
    (CKF_SO_PIN_LOCKED, "SO_PIN_LOCKED"),
    (CKF_SO_PIN_TO_BE_CHANGED, "SO_PIN_TO_BE_CHANGED"),
    (CKF_ERROR_STATE, "ERROR_STATE"),
];

pub const MECH_FLAGS: &[(CK_FLAGS, &str)] = &[
    (CKF_HW, "HW"),
    (CKF_ENCRYPT, "ENCRYPT"),
    (CKF_DECRYPT, "DECRYPT"),
    (CKF_DIGEST, "DIGEST"),
    (CKF_SIGN, "SIGN"),
    (CKF_SIGN_RECOVER, "SIGN_RECOVER"),
    (CKF_VERIFY, "VERIFY"),
    (CKF_VERIFY_RECOVER, "VERIFY_RECOVER"),
    (CKF_GENERATE, "GENERATE"),
    (CKF_GENERATE_KEY_PAIR, "GENERATE_KEY_PAIR"),
    (CKF_WRAP, "WRAP"),
    (CKF_UNWRAP, "UNWRAP"),
    (CKF_DERIVE, "DERIVE"),
    (CKF_EC_F_P, "EC_F_P"),
    (CKF_EC_F_2M, "EC_F_2M"),
    (CKF_EC_ECPARAMETERS, "EC_ECPARAMETERS"),
    (CKF_EC_OID, "EC_OID"),
    (CKF_EC_UNCOMPRESS, "EC_UNCOMPRESS"),
    (CKF_EC_COMPRESS, "EC_COMPRESS"),
    (CKF_EXTENSION, "EXTENSION"),
];

pub const SESSION_FLAGS: &[(CK_FLAGS, &str)] = &[
    (CKF_RW_SESSION, "RW_SESSION"),
    (CKF_SERIAL_SESSION, "SERIAL_SESSION"),
];

pub fn state_name(state: CK_STATE) -> String {
    match state {
        CKS_RO_PUBLIC_SESSION => "RO_PUBLIC_SESSION".into(),
        CKS_RO_USER_FUNCTIONS => "RO_USER_FUNCTIONS".into(),
        CKS_RW_PUBLIC_SESSION => "RW_PUBLIC_SESSION".into(),
        CKS_RW_USER_FUNCTIONS => "RW_USER_FUNCTIONS".into(),
        CKS_RW_SO_FUNCTIONS => "RW_SO_FUNCTIONS".into(),
        s => format!("{s:#x}"),
    }
}

pub const MECHANISMS: &[(CK_MECHANISM_TYPE, &str)] = &[
    (CKM_ECDSA, "ECDSA"),
    (CKM_ECDSA_SHA1, "ECDSA_SHA1"),
    (CKM_ECDSA_SHA224, "ECDSA_SHA224"),
    (CKM_ECDSA_SHA256, "ECDSA_SHA256"),
    (CKM_ECDSA_SHA384, "ECDSA_SHA384"),
    (CKM_ECDSA_SHA512, "ECDSA_SHA512"),
    (CKM_SHA_1, "SHA_1"),
    (CKM_SHA224, "SHA224"),
    (CKM_SHA256, "SHA256"),
    (CKM_SHA384, "SHA384"),
    (CKM_SHA512, "SHA512"),
    (CKM_EC_KEY_PAIR_GEN, "EC_KEY_PAIR_GEN"),
    (CKM_ECDH1_DERIVE, "ECDH1_DERIVE"),
    (CKM_RSA_PKCS, "RSA_PKCS"),
    (CKM_AES_ECB, "AES_ECB"),
    (CKM_TLS12_MASTER_KEY_DERIVE, "TLS12_MASTER_KEY_DERIVE"),
    (CKM_TLS12_MASTER_KEY_DERIVE_DH, "TLS12_MASTER_KEY_DERIVE_DH"),
    (
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE,
        "TLS12_EXTENDED_MASTER_KEY_DERIVE",
    ),
    (
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH,
        "TLS12_EXTENDED_MASTER_KEY_DERIVE_DH",
    ),
    (CKM_TLS12_KDF, "TLS12_KDF"),
    (CKM_HKDF_DERIVE, "HKDF_DERIVE"),
    (CKM_IOTSAFE_TLS12_PSK_KDF, "IOTSAFE_TLS12_PSK_KDF"),
    (
        CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF,
        "IOTSAFE_TLS12_ECDHE_PSK_KDF",
    ),
];

/// The module's vendor mechanisms (include/iotsafe_pkcs11.h): TLS 1.2 PRF keyed by a PSK on the
/// card (plain PSK, ECDHE-PSK). Other modules answer CKR_MECHANISM_INVALID.
pub const CKM_IOTSAFE_TLS12_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0001;
pub const CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0002;

pub fn mech_name(m: CK_MECHANISM_TYPE) -> String {
    MECHANISMS
        .iter()
        .find(|(v, _)| *v == m)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("{m:#x}"))
}

/// A blank-padded fixed-size text field: `"text"` if it is printable ASCII/UTF-8 padded with
/// blanks and has no NUL, else `BAD(<why>)`.
pub fn padded(field: &[u8]) -> String {
    if field.contains(&0) {
        return "BAD(NUL in field)".into();
    }
    match std::str::from_utf8(field) {
        Ok(s) => format!("{:?}", s.trim_end_matches(' ')),
        Err(_) => "BAD(not UTF-8)".into(),
    }
}

/// Whether a fixed-size field is correctly blank-padded (no NUL, valid UTF-8).
pub fn padding_ok(field: &[u8]) -> &'static str {
    if field.contains(&0) {
        "NUL"
    } else if std::str::from_utf8(field).is_err() {
        "not-UTF-8"
    } else {
        "ok"
    }
}

/// Bytes shown whole when short, else as length + a SHA-256 prefix.
pub fn bytes(b: &[u8]) -> String {
    if b.len() <= 72 {
        format!("{} bytes {}", b.len(), hex::encode(b))
    } else {
        use sha2::Digest;
        let h = sha2::Sha256::digest(b);
        format!("{} bytes sha256:{}", b.len(), hex::encode(&h[..8]))
    }
}

pub fn ulong(v: CK_ULONG) -> String {
    if v == CK_UNAVAILABLE_INFORMATION {
        "UNAVAILABLE".into()
    } else if v == CK_EFFECTIVELY_INFINITE {
        "0(infinite)".into()
    } else {
        v.to_string()
    }
}

/// A count field (sessions): a number or UNAVAILABLE.
pub fn count(v: CK_ULONG) -> String {
    if v == CK_UNAVAILABLE_INFORMATION {
        "UNAVAILABLE".into()
    } else {
        v.to_string()
    }
}
