//! APDUs per PKCS#11 operation, read from the simulator's counters (in-process card, the
//! module's real code paths). Prints a markdown table. Run: `cargo bench --bench apdu_counts`.

#[path = "../tests/helpers/mod.rs"]
mod helpers;

use std::time::Instant;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;

fn row(operation: &str, apdus: u64, target: &str, detail: String) {
    println!("| {operation} | {apdus} | {target} | {detail} |");
}

fn by_ins(h: &Harness) -> String {
    let stats = h.card().stats();
    stats
        .by_ins
        .iter()
        .map(|(ins, n)| format!("{ins:02X}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let h = Harness::default();
    h.apdus();
    println!("| operation | APDUs | target | by INS |");
    println!("|---|---|---|---|");

    let start = Instant::now();
    let s = h.init_and_open();
    let first = by_ins(&h);
    row(
        "first session after C_Initialize (connect, read objects)",
        h.apdus(),
        "one-off",
        format!("{first} in {:?}", start.elapsed()),
    );

    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let pubkey = object_by_label(s, CKO_PUBLIC_KEY, "client");
    h.apdus();
    let all = find(s, &mut []);
    row(
        "C_FindObjectsInit/FindObjects/Final (all objects)",
        h.apdus(),
        "0",
        format!("{} objects", all.len()),
    );
    get_attr(s, key, CKA_EC_POINT).unwrap();
    get_attr(s, key, CKA_EC_PARAMS).unwrap();
    row(
        "C_GetAttributeValue (2 attributes)",
        h.apdus(),
        "0",
        String::new(),
    );

    for (name, m) in [
        ("CKM_ECDSA", CKM_ECDSA),
        ("CKM_ECDSA_SHA256", CKM_ECDSA_SHA256),
        ("CKM_ECDSA_SHA384", CKM_ECDSA_SHA384),
        ("CKM_ECDSA_SHA512", CKM_ECDSA_SHA512),
    ] {
        sign(s, m, key, &[0x5A; 32]).unwrap();
        h.apdus();
        const N: u64 = 100;
        for _ in 0..N {
            sign(s, m, key, &[0x5A; 32]).unwrap();
        }
        let per = h.card().stats().total / N;
        let detail = by_ins(&h);
        h.apdus();
        row(
            &format!("steady-state C_SignInit + C_Sign ({name}), per signature"),
            per,
            "2",
            format!("{detail} over {N}"),
        );
    }

    unsafe {
        let mut mm = mech(CKM_ECDSA_SHA256);
        C_SignInit(s, &mut mm, key);
        let mut len: CK_ULONG = 0;
        h.apdus();
        C_Sign(
            s,
            b"x".as_ptr() as *mut _,
            1,
            std::ptr::null_mut(),
            &mut len,
        );
        row(
            "C_Sign size query (NULL buffer)",
            h.apdus(),
            "0",
            String::new(),
        );
        let mut sig = vec![0u8; len as usize];
        C_Sign(s, b"x".as_ptr() as *mut _, 1, sig.as_mut_ptr(), &mut len);
        h.apdus();
        C_VerifyInit(s, &mut mm, pubkey);
        let rv = C_Verify(s, b"x".as_ptr() as *mut _, 1, sig.as_mut_ptr(), len);
        assert_eq!(rv, CKR_OK);
        row(
            "C_VerifyInit + C_Verify (host, cached public key)",
            h.apdus(),
            "0",
            String::new(),
        );
        let mut buf = vec![0u8; 1024];
        C_GenerateRandom(s, buf.as_mut_ptr(), 1024);
        let detail = by_ins(&h);
        row("C_GenerateRandom, 1 KiB", h.apdus(), "4", detail);

        // A derivation keyed by a PSK that never leaves the card (HKDF extract, TLS 1.3 early
        // secret); the PRF mechanisms take the same one command.
        let psk = object_by_label(s, CKO_SECRET_KEY, "tls13-psk");
        let mut p = CK_HKDF_PARAMS {
            bExtract: 1,
            bExpand: 0,
            prfHashMechanism: CKM_SHA384,
            ulSaltType: CKF_HKDF_SALT_NULL,
            pSalt: std::ptr::null_mut(),
            ulSaltLen: 0,
            hSaltKey: CK_INVALID_HANDLE,
            pInfo: std::ptr::null_mut(),
            ulInfoLen: 0,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_HKDF_DERIVE,
            pParameter: &mut p as *mut CK_HKDF_PARAMS as *mut _,
            ulParameterLen: std::mem::size_of::<CK_HKDF_PARAMS>() as CK_ULONG,
        };
        let mut derived = 0;
        h.apdus();
        let rv = C_DeriveKey(s, &mut m, psk, std::ptr::null_mut(), 0, &mut derived);
        assert_eq!(rv, CKR_OK);
        let detail = by_ins(&h);
        row(
            "C_DeriveKey with a PSK on the card (CKM_HKDF_DERIVE extract)",
            h.apdus(),
            "1",
            detail,
        );
    }
}
