//! 5.5 Slot and token management: `C_GetSlotList`, `C_GetSlotInfo`, `C_GetTokenInfo`.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{slot_list, slot_with_label};
use super::{BOGUS_SLOT, Options};
use crate::call;
use crate::module::Module;
use crate::report::{
    Report, SLOT_FLAGS, TOKEN_FLAGS, count, flag_names, padded, padding_ok, ulong,
};

pub(super) fn slots(
    m: &Module,
    o: &Options,
    r: &mut Report,
) -> Option<(CK_SLOT_ID, Option<CK_SLOT_ID>)> {
    for (present, name) in [(CK_FALSE, "FALSE"), (CK_TRUE, "TRUE")] {
        let mut n = 0;
        let rv = call!(m, C_GetSlotList, present, null_mut(), &mut n);
        r.check(
            &format!("slots.{}.count", name.to_lowercase()),
            &format!("C_GetSlotList({name}, NULL)"),
            rv,
            format!("count={n}"),
        );
        if n > 0 {
            let mut v = vec![0; n as usize];
            let mut k = n - 1;
            let rv = call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut k);
            r.check(
                &format!("slots.{}.short", name.to_lowercase()),
                &format!("C_GetSlotList({name}, count-1)"),
                rv,
                format!("count={k}"),
            );
            let mut k = n;
            let rv = call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut k);
            r.check(
                &format!("slots.{}.exact", name.to_lowercase()),
                &format!("C_GetSlotList({name}, count)"),
                rv,
                format!("count={k}"),
            );
        }
    }
    let rv = call!(m, C_GetSlotList, CK_FALSE, null_mut(), null_mut());
    r.check(
        "slots.null_count",
        "C_GetSlotList(FALSE, NULL, NULL)",
        rv,
        "",
    );

    let all = slot_list(m, CK_FALSE);
    let Some(slot) = slot_with_label(m, &all, &o.token_label) else {
        r.fact("slots.token", "token with the given label", "NOT FOUND");
        return None;
    };
    let other = all.iter().copied().find(|&s| s != slot);
    r.fact(
        "slots.token",
        "token with the given label",
        format!("found; other slots: {}", all.len() - 1),
    );
    for (id, s) in [("slot.info.token", Some(slot)), ("slot.info.other", other)] {
        let Some(s) = s else { continue };
        let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
        let rv = call!(m, C_GetSlotInfo, s, &mut si);
        r.check(
            id,
            "C_GetSlotInfo",
            rv,
            format!(
                "flags={} slotDescription {} manufacturerID {}",
                flag_names(si.flags, SLOT_FLAGS),
                padding_ok(&si.slotDescription),
                padding_ok(&si.manufacturerID)
            ),
        );
    }
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetSlotInfo, BOGUS_SLOT, &mut si);
    r.check("slot.info.bogus", "C_GetSlotInfo(bogus slot)", rv, "");
    let rv = call!(m, C_GetSlotInfo, slot, null_mut());
    r.check("slot.info.null", "C_GetSlotInfo(slot, NULL)", rv, "");
    Some((slot, other))
}

pub(super) fn token(m: &Module, slot: CK_SLOT_ID, other: Option<CK_SLOT_ID>, r: &mut Report) {
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetTokenInfo, slot, &mut t);
    r.check("token.label", "C_GetTokenInfo", rv, padded(&t.label));
    r.check(
        "token.flags",
        "C_GetTokenInfo",
        rv,
        flag_names(t.flags, TOKEN_FLAGS),
    );
    r.check(
        "token.padding",
        "C_GetTokenInfo",
        rv,
        format!(
            "label {} manufacturerID {} model {} serialNumber {}",
            padding_ok(&t.label),
            padding_ok(&t.manufacturerID),
            padding_ok(&t.model),
            padding_ok(&t.serialNumber)
        ),
    );
    r.check(
        "token.sessions",
        "C_GetTokenInfo",
        rv,
        format!(
            "max {} maxRw {} count {} rwCount {}",
            ulong(t.ulMaxSessionCount),
            ulong(t.ulMaxRwSessionCount),
            count(t.ulSessionCount),
            count(t.ulRwSessionCount)
        ),
    );
    r.check(
        "token.pin_len",
        "C_GetTokenInfo",
        rv,
        format!("min {} max {}", t.ulMinPinLen, t.ulMaxPinLen),
    );
    r.check(
        "token.memory",
        "C_GetTokenInfo",
        rv,
        format!(
            "public {}/{} private {}/{}",
            ulong(t.ulFreePublicMemory),
            ulong(t.ulTotalPublicMemory),
            ulong(t.ulFreePrivateMemory),
            ulong(t.ulTotalPrivateMemory)
        ),
    );
    let clock = if t.flags & CKF_CLOCK_ON_TOKEN != 0 {
        format!("clock, utcTime {}", padding_ok(&t.utcTime))
    } else {
        "no clock".into()
    };
    r.check("token.clock", "C_GetTokenInfo", rv, clock);
    if let Some(o) = other {
        let rv = call!(m, C_GetTokenInfo, o, &mut t);
        r.check("token.other_slot", "C_GetTokenInfo(other slot)", rv, "");
    }
    let rv = call!(m, C_GetTokenInfo, BOGUS_SLOT, &mut t);
    r.check("token.bogus_slot", "C_GetTokenInfo(bogus slot)", rv, "");
    let rv = call!(m, C_GetTokenInfo, slot, null_mut());
    r.check("token.null", "C_GetTokenInfo(slot, NULL)", rv, "");
}
