//! 5.5 Slot and token management, mechanisms: `C_GetMechanismList`, `C_GetMechanismInfo`.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::{BOGUS_MECHANISM, BOGUS_SLOT};
use crate::call;
use crate::module::Module;
use crate::report::{MECH_FLAGS, MECHANISMS, Report, flag_names};

pub(super) fn mechanisms(m: &Module, slot: CK_SLOT_ID, r: &mut Report) {
    let mut n = 0;
    let rv = call!(m, C_GetMechanismList, slot, null_mut(), &mut n);
    r.check(
        "mech.list.count",
        "C_GetMechanismList(NULL)",
        rv,
        format!("count={n}"),
    );
    let mut v = vec![0; n as usize];
    if n > 0 {
        let mut k = n - 1;
        let rv = call!(m, C_GetMechanismList, slot, v.as_mut_ptr(), &mut k);
        r.check(
            "mech.list.short",
            "C_GetMechanismList(count-1)",
            rv,
            format!("count={k}"),
        );
    }
    let mut k = n;
    let rv = call!(m, C_GetMechanismList, slot, v.as_mut_ptr(), &mut k);
    v.truncate(k as usize);
    let known: Vec<String> = MECHANISMS
        .iter()
        .filter(|(t, _)| v.contains(t))
        .map(|(_, n)| n.to_string())
        .collect();
    r.check(
        "mech.list",
        "C_GetMechanismList(count)",
        rv,
        format!("of interest: {}", known.join(" ")),
    );
    for &(t, name) in MECHANISMS {
        let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
        let rv = call!(m, C_GetMechanismInfo, slot, t, &mut i);
        let out = if rv == CKR_OK {
            format!(
                "keySize {}..{} flags={}",
                i.ulMinKeySize,
                i.ulMaxKeySize,
                flag_names(i.flags, MECH_FLAGS)
            )
        } else {
            String::new()
        };
        r.check(
            &format!("mech.info.{name}"),
            &format!("C_GetMechanismInfo({name})"),
            rv,
            out,
        );
        if rv == CKR_OK && !v.contains(&t) {
            r.fact(
                &format!("mech.info.{name}.listed"),
                "in C_GetMechanismList",
                "NO",
            );
        }
    }
    let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetMechanismInfo, slot, BOGUS_MECHANISM, &mut i);
    r.check(
        "mech.info.bogus",
        "C_GetMechanismInfo(vendor 0x80001234)",
        rv,
        "",
    );
    let rv = call!(m, C_GetMechanismInfo, slot, CKM_ECDSA, null_mut());
    r.check("mech.info.null", "C_GetMechanismInfo(ECDSA, NULL)", rv, "");
    let rv = call!(m, C_GetMechanismList, BOGUS_SLOT, null_mut(), &mut n);
    r.check(
        "mech.list.bogus_slot",
        "C_GetMechanismList(bogus slot)",
        rv,
        "",
    );
    let rv = call!(m, C_GetMechanismList, slot, null_mut(), null_mut());
    r.check(
        "mech.list.null_count",
        "C_GetMechanismList(slot, NULL, NULL)",
        rv,
        "",
    );
}
