//! The functions documented as not supported (`docs/unsupported.md`) are exactly the ones
//! `src/ffi/` declares with `not_supported!`, each answers `CKR_FUNCTION_NOT_SUPPORTED`, and no
//! other exported function answers it to the same call (a valid session or slot, every other
//! argument zero or NULL).

mod helpers;

use std::collections::BTreeSet;
use std::path::Path;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn function_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("C_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

/// (every `C_*` function `src/ffi/` defines, the ones declared with `not_supported!`).
fn functions_in_source() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut all, mut unsupported) = (BTreeSet::new(), BTreeSet::new());
    for entry in std::fs::read_dir(repo().join("src/ffi")).expect("src/ffi") {
        let path = entry.expect("src/ffi entry").path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("mod.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read src/ffi");
        for (at, _) in text.match_indices("not_supported!(") {
            // The names stand before the parameter list: `not_supported!(C_A | C_B(…))`.
            let head = &text[at + "not_supported!(".len()..];
            let head = &head[..head.find('(').unwrap_or(head.len())];
            unsupported.extend(function_names(head));
        }
        for (at, _) in text.match_indices("fn C_") {
            all.extend(function_names(&text[at + 3..]).into_iter().take(1));
        }
    }
    all.extend(unsupported.iter().cloned());
    (all, unsupported)
}

fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/unsupported.md")).expect("docs");
    let begin = text
        .find("<!-- unsupported:begin -->")
        .expect("begin marker");
    let end = text.find("<!-- unsupported:end -->").expect("end marker");
    function_names(&text[begin..end]).into_iter().collect()
}

/// A zero / NULL / None argument of any type the C functions take.
trait Zero {
    fn zero() -> Self;
}
impl Zero for CK_ULONG {
    fn zero() -> Self {
        0
    }
}
impl Zero for CK_BBOOL {
    fn zero() -> Self {
        0
    }
}
impl<T> Zero for *mut T {
    fn zero() -> Self {
        std::ptr::null_mut()
    }
}
impl<T> Zero for Option<T> {
    fn zero() -> Self {
        None
    }
}

macro_rules! z {
    () => {
        Zero::zero()
    };
}

#[test]
fn the_documented_unsupported_functions_are_exactly_those_that_answer_function_not_supported() {
    let (all, unsupported) = functions_in_source();
    assert_eq!(
        documented(),
        unsupported,
        "docs/unsupported.md lists other functions than src/ffi declares with not_supported!"
    );

    let h = Harness::default();
    let s = h.init_and_open();
    let slot: CK_SLOT_ID = 0;
    // Every exported function, called with the session (or slot) and zeros; the teardown ones
    // last.
    let answers: Vec<(&str, CK_RV)> = unsafe {
        vec![
            ("C_Initialize", C_Initialize(z!())),
            ("C_GetInfo", C_GetInfo(z!())),
            ("C_GetFunctionList", C_GetFunctionList(z!())),
            ("C_GetInterfaceList", C_GetInterfaceList(z!(), z!())),
            ("C_GetInterface", C_GetInterface(z!(), z!(), z!(), z!())),
            ("C_GetSlotList", C_GetSlotList(z!(), z!(), z!())),
            ("C_GetSlotInfo", C_GetSlotInfo(slot, z!())),
            ("C_GetTokenInfo", C_GetTokenInfo(slot, z!())),
            ("C_GetMechanismList", C_GetMechanismList(slot, z!(), z!())),
            ("C_GetMechanismInfo", C_GetMechanismInfo(slot, z!(), z!())),
            ("C_InitToken", C_InitToken(slot, z!(), z!(), z!())),
            ("C_InitPIN", C_InitPIN(s, z!(), z!())),
            ("C_SetPIN", C_SetPIN(s, z!(), z!(), z!(), z!())),
            (
                "C_WaitForSlotEvent",
                C_WaitForSlotEvent(CKF_DONT_BLOCK, z!(), z!()),
            ),
            ("C_OpenSession", C_OpenSession(slot, z!(), z!(), z!(), z!())),
            ("C_GetSessionInfo", C_GetSessionInfo(s, z!())),
            ("C_SessionCancel", C_SessionCancel(s, z!())),
            ("C_GetOperationState", C_GetOperationState(s, z!(), z!())),
            (
                "C_SetOperationState",
                C_SetOperationState(s, z!(), z!(), z!(), z!()),
            ),
            ("C_Login", C_Login(s, z!(), z!(), z!())),
            ("C_LoginUser", C_LoginUser(s, z!(), z!(), z!(), z!(), z!())),
            ("C_Logout", C_Logout(s)),
            ("C_CreateObject", C_CreateObject(s, z!(), z!(), z!())),
            ("C_CopyObject", C_CopyObject(s, z!(), z!(), z!(), z!())),
            ("C_DestroyObject", C_DestroyObject(s, z!())),
            ("C_GetObjectSize", C_GetObjectSize(s, z!(), z!())),
            (
                "C_GetAttributeValue",
                C_GetAttributeValue(s, z!(), z!(), z!()),
            ),
            (
                "C_SetAttributeValue",
                C_SetAttributeValue(s, z!(), z!(), z!()),
            ),
            ("C_FindObjectsInit", C_FindObjectsInit(s, z!(), z!())),
            ("C_FindObjects", C_FindObjects(s, z!(), z!(), z!())),
            ("C_FindObjectsFinal", C_FindObjectsFinal(s)),
            ("C_EncryptInit", C_EncryptInit(s, z!(), z!())),
            ("C_Encrypt", C_Encrypt(s, z!(), z!(), z!(), z!())),
            (
                "C_EncryptUpdate",
                C_EncryptUpdate(s, z!(), z!(), z!(), z!()),
            ),
            ("C_EncryptFinal", C_EncryptFinal(s, z!(), z!())),
            ("C_DecryptInit", C_DecryptInit(s, z!(), z!())),
            ("C_Decrypt", C_Decrypt(s, z!(), z!(), z!(), z!())),
            (
                "C_DecryptUpdate",
                C_DecryptUpdate(s, z!(), z!(), z!(), z!()),
            ),
            ("C_DecryptFinal", C_DecryptFinal(s, z!(), z!())),
            ("C_DigestInit", C_DigestInit(s, z!())),
            ("C_Digest", C_Digest(s, z!(), z!(), z!(), z!())),
            ("C_DigestUpdate", C_DigestUpdate(s, z!(), z!())),
            ("C_DigestKey", C_DigestKey(s, z!())),
            ("C_DigestFinal", C_DigestFinal(s, z!(), z!())),
            ("C_SignInit", C_SignInit(s, z!(), z!())),
            ("C_Sign", C_Sign(s, z!(), z!(), z!(), z!())),
            ("C_SignUpdate", C_SignUpdate(s, z!(), z!())),
            ("C_SignFinal", C_SignFinal(s, z!(), z!())),
            ("C_SignRecoverInit", C_SignRecoverInit(s, z!(), z!())),
            ("C_SignRecover", C_SignRecover(s, z!(), z!(), z!(), z!())),
            ("C_VerifyInit", C_VerifyInit(s, z!(), z!())),
            ("C_Verify", C_Verify(s, z!(), z!(), z!(), z!())),
            ("C_VerifyUpdate", C_VerifyUpdate(s, z!(), z!())),
            ("C_VerifyFinal", C_VerifyFinal(s, z!(), z!())),
            ("C_VerifyRecoverInit", C_VerifyRecoverInit(s, z!(), z!())),
            (
                "C_VerifyRecover",
                C_VerifyRecover(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_DigestEncryptUpdate",
                C_DigestEncryptUpdate(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_DecryptDigestUpdate",
                C_DecryptDigestUpdate(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_SignEncryptUpdate",
                C_SignEncryptUpdate(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_DecryptVerifyUpdate",
                C_DecryptVerifyUpdate(s, z!(), z!(), z!(), z!()),
            ),
            ("C_GenerateKey", C_GenerateKey(s, z!(), z!(), z!(), z!())),
            (
                "C_GenerateKeyPair",
                C_GenerateKeyPair(s, z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_WrapKey", C_WrapKey(s, z!(), z!(), z!(), z!(), z!())),
            (
                "C_UnwrapKey",
                C_UnwrapKey(s, z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_DeriveKey", C_DeriveKey(s, z!(), z!(), z!(), z!(), z!())),
            ("C_SeedRandom", C_SeedRandom(s, z!(), z!())),
            ("C_GenerateRandom", C_GenerateRandom(s, z!(), z!())),
            ("C_GetFunctionStatus", C_GetFunctionStatus(s)),
            ("C_CancelFunction", C_CancelFunction(s)),
            ("C_MessageEncryptInit", C_MessageEncryptInit(s, z!(), z!())),
            (
                "C_EncryptMessage",
                C_EncryptMessage(s, z!(), z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            (
                "C_EncryptMessageBegin",
                C_EncryptMessageBegin(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_EncryptMessageNext",
                C_EncryptMessageNext(s, z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_MessageEncryptFinal", C_MessageEncryptFinal(s)),
            ("C_MessageDecryptInit", C_MessageDecryptInit(s, z!(), z!())),
            (
                "C_DecryptMessage",
                C_DecryptMessage(s, z!(), z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            (
                "C_DecryptMessageBegin",
                C_DecryptMessageBegin(s, z!(), z!(), z!(), z!()),
            ),
            (
                "C_DecryptMessageNext",
                C_DecryptMessageNext(s, z!(), z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_MessageDecryptFinal", C_MessageDecryptFinal(s)),
            ("C_MessageSignInit", C_MessageSignInit(s, z!(), z!())),
            (
                "C_SignMessage",
                C_SignMessage(s, z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_SignMessageBegin", C_SignMessageBegin(s, z!(), z!())),
            (
                "C_SignMessageNext",
                C_SignMessageNext(s, z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_MessageSignFinal", C_MessageSignFinal(s)),
            ("C_MessageVerifyInit", C_MessageVerifyInit(s, z!(), z!())),
            (
                "C_VerifyMessage",
                C_VerifyMessage(s, z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_VerifyMessageBegin", C_VerifyMessageBegin(s, z!(), z!())),
            (
                "C_VerifyMessageNext",
                C_VerifyMessageNext(s, z!(), z!(), z!(), z!(), z!(), z!()),
            ),
            ("C_MessageVerifyFinal", C_MessageVerifyFinal(s)),
            ("C_CloseSession", C_CloseSession(s)),
            ("C_CloseAllSessions", C_CloseAllSessions(slot)),
            ("C_Finalize", C_Finalize(z!())),
        ]
    };
    let called: BTreeSet<String> = answers.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        called, all,
        "this test must call every function src/ffi defines (add the new ones above)"
    );
    let mut wrong = Vec::new();
    for (name, rv) in &answers {
        let listed = unsupported.contains(*name);
        if listed != (*rv == CKR_FUNCTION_NOT_SUPPORTED) {
            wrong.push(format!(
                "{name}: 0x{rv:x} ({})",
                if listed {
                    "listed as not supported"
                } else {
                    "not listed"
                }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "answers that contradict docs/unsupported.md: {wrong:#?}"
    );
}
