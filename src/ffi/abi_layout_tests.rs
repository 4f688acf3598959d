//! The structures the module and its callers exchange have the layout of the shipped C headers
//! on the target being built: a C file of `_Static_assert`s on `sizeof`/`offsetof`, with the
//! sizes and offsets Rust uses, must compile with the target's C compiler (`$CC`, else `cc`).
//! This catches a structure written for 8-byte `CK_ULONG`s on a target where it has 4 (32-bit
//! ARM), in `cryptoki-sys` or in the module's own `CK_IOTSAFE_TLS12_PSK_KDF_PARAMS`.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use cryptoki_sys::*;

use super::params::IotsafeTls12PskKdfParams;

/// Adds the size of `$rust` and the offset of each field as `_Static_assert`s on `$c`.
macro_rules! layout {
    ($out:expr, $rust:ty => $c:literal { $($field:ident => $cfield:literal),* $(,)? }) => {{
        let _ = writeln!(
            $out,
            "_Static_assert(sizeof({}) == {}, \"sizeof({})\");",
            $c,
            size_of::<$rust>(),
            $c
        );
        $(
            let _ = writeln!(
                $out,
                "_Static_assert(offsetof({}, {}) == {}, \"offsetof({}, {})\");",
                $c,
                $cfield,
                offset_of!($rust, $field),
                $c,
                $cfield
            );
        )*
    }};
}

fn assertions() -> String {
    let mut c =
        String::from("#include <stddef.h>\n#include \"pkcs11.h\"\n#include \"iotsafe_pkcs11.h\"\n");
    let _ = writeln!(
        c,
        "_Static_assert(sizeof(CK_ULONG) == {}, \"sizeof(CK_ULONG)\");",
        size_of::<CK_ULONG>()
    );
    layout!(c, CK_VERSION => "CK_VERSION" { major => "major", minor => "minor" });
    layout!(c, CK_INFO => "CK_INFO" {
        cryptokiVersion => "cryptokiVersion", manufacturerID => "manufacturerID", flags => "flags",
        libraryDescription => "libraryDescription", libraryVersion => "libraryVersion",
    });
    layout!(c, CK_SLOT_INFO => "CK_SLOT_INFO" {
        slotDescription => "slotDescription", manufacturerID => "manufacturerID", flags => "flags",
        hardwareVersion => "hardwareVersion", firmwareVersion => "firmwareVersion",
    });
    layout!(c, CK_TOKEN_INFO => "CK_TOKEN_INFO" {
        label => "label", flags => "flags", ulMaxSessionCount => "ulMaxSessionCount",
        ulSessionCount => "ulSessionCount", ulMaxPinLen => "ulMaxPinLen",
        ulMinPinLen => "ulMinPinLen", ulTotalPublicMemory => "ulTotalPublicMemory",
        ulFreePrivateMemory => "ulFreePrivateMemory", hardwareVersion => "hardwareVersion",
        utcTime => "utcTime",
    });
    layout!(c, CK_SESSION_INFO => "CK_SESSION_INFO" {
        slotID => "slotID", state => "state", flags => "flags", ulDeviceError => "ulDeviceError",
    });
    layout!(c, CK_ATTRIBUTE => "CK_ATTRIBUTE" {
        type_ => "type", pValue => "pValue", ulValueLen => "ulValueLen",
    });
    layout!(c, CK_DATE => "CK_DATE" { year => "year", month => "month", day => "day" });
    layout!(c, CK_MECHANISM => "CK_MECHANISM" {
        mechanism => "mechanism", pParameter => "pParameter", ulParameterLen => "ulParameterLen",
    });
    layout!(c, CK_MECHANISM_INFO => "CK_MECHANISM_INFO" {
        ulMinKeySize => "ulMinKeySize", ulMaxKeySize => "ulMaxKeySize", flags => "flags",
    });
    layout!(c, CK_C_INITIALIZE_ARGS => "CK_C_INITIALIZE_ARGS" {
        CreateMutex => "CreateMutex", UnlockMutex => "UnlockMutex", flags => "flags",
        pReserved => "pReserved",
    });
    layout!(c, CK_INTERFACE => "CK_INTERFACE" {
        pInterfaceName => "pInterfaceName", pFunctionList => "pFunctionList", flags => "flags",
    });
    layout!(c, CK_FUNCTION_LIST => "CK_FUNCTION_LIST" {
        version => "version", C_Initialize => "C_Initialize", C_Sign => "C_Sign",
        C_WaitForSlotEvent => "C_WaitForSlotEvent",
    });
    layout!(c, CK_FUNCTION_LIST_3_0 => "CK_FUNCTION_LIST_3_0" {
        C_WaitForSlotEvent => "C_WaitForSlotEvent", C_GetInterfaceList => "C_GetInterfaceList",
        C_MessageVerifyFinal => "C_MessageVerifyFinal",
    });
    layout!(c, CK_ECDH1_DERIVE_PARAMS => "CK_ECDH1_DERIVE_PARAMS" {
        kdf => "kdf", ulSharedDataLen => "ulSharedDataLen", pSharedData => "pSharedData",
        ulPublicDataLen => "ulPublicDataLen", pPublicData => "pPublicData",
    });
    layout!(c, CK_HKDF_PARAMS => "CK_HKDF_PARAMS" {
        bExtract => "bExtract", prfHashMechanism => "prfHashMechanism",
        ulSaltType => "ulSaltType", pSalt => "pSalt", hSaltKey => "hSaltKey",
        pInfo => "pInfo", ulInfoLen => "ulInfoLen",
    });
    layout!(c, CK_SSL3_RANDOM_DATA => "CK_SSL3_RANDOM_DATA" {
        pClientRandom => "pClientRandom", ulClientRandomLen => "ulClientRandomLen",
        pServerRandom => "pServerRandom", ulServerRandomLen => "ulServerRandomLen",
    });
    layout!(c, CK_TLS12_MASTER_KEY_DERIVE_PARAMS => "CK_TLS12_MASTER_KEY_DERIVE_PARAMS" {
        RandomInfo => "RandomInfo", pVersion => "pVersion", prfHashMechanism => "prfHashMechanism",
    });
    layout!(c, CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS =>
        "CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS" {
        prfHashMechanism => "prfHashMechanism", pSessionHash => "pSessionHash",
        ulSessionHashLen => "ulSessionHashLen", pVersion => "pVersion",
    });
    layout!(c, CK_TLS_KDF_PARAMS => "CK_TLS_KDF_PARAMS" {
        prfMechanism => "prfMechanism", pLabel => "pLabel", ulLabelLength => "ulLabelLength",
        RandomInfo => "RandomInfo", pContextData => "pContextData",
        ulContextDataLength => "ulContextDataLength",
    });
    layout!(c, IotsafeTls12PskKdfParams => "CK_IOTSAFE_TLS12_PSK_KDF_PARAMS" {
        prfHashMechanism => "prfHashMechanism", pLabel => "pLabel", ulLabelLen => "ulLabelLen",
        pSeed => "pSeed", ulSeedLen => "ulSeedLen", pOtherSecret => "pOtherSecret",
        ulOtherSecretLen => "ulOtherSecretLen",
    });
    c
}

#[test]
fn structures_match_the_shipped_headers_on_this_target() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("iotsafe-abi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let source = dir.join("layout.c");
    std::fs::write(&source, assertions()).expect("write layout.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(&include)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("run {cc}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the C compiler disagrees with Rust's layouts:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wrong_layout_is_caught() {
    // The check itself can fail: a struct written for 8-byte CK_ULONGs on a 4-byte target (or
    // the other way round) is refused.
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("iotsafe-abi-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let source = dir.join("wrong.c");
    let wrong = 12 - size_of::<CK_ULONG>();
    std::fs::write(
        &source,
        format!(
            "#include <stddef.h>\n#include \"pkcs11.h\"\n\
             _Static_assert(sizeof(CK_ULONG) == {wrong}, \"sizeof(CK_ULONG)\");\n"
        ),
    )
    .expect("write wrong.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-fsyntax-only", "-I"])
        .arg(&include)
        .arg(&source)
        .output()
        .map(|o| o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.ok(), Some(false), "a wrong CK_ULONG size compiles");
}
