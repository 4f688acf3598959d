//! 5.6 Session management: open, close, session information, login and logout.

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{login, open, open_session, session_info};
use super::{BOGUS_HANDLE, BOGUS_SLOT, Options};
use crate::call;
use crate::module::Module;
use crate::report::{Report, count};

unsafe extern "C" fn notify(_: CK_SESSION_HANDLE, _: CK_NOTIFICATION, _: *mut c_void) -> CK_RV {
    CKR_OK
}

pub(super) fn sessions(
    m: &Module,
    o: &Options,
    slot: CK_SLOT_ID,
    other: Option<CK_SLOT_ID>,
    r: &mut Report,
) {
    let (rv, _) = open_session(m, slot, 0);
    r.check("session.open.no_serial", "C_OpenSession(flags=0)", rv, "");
    let ro = open(m, slot, CKF_SERIAL_SESSION);
    let (rv, i) = session_info(m, ro);
    r.check(
        "session.open.ro",
        "C_OpenSession(SERIAL); C_GetSessionInfo",
        rv,
        i,
    );
    let (rv, rw) = open_session(m, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    r.check("session.open.rw", "C_OpenSession(SERIAL|RW)", rv, "");
    let (rv, i) = session_info(m, rw);
    r.check("session.info.rw", "C_GetSessionInfo(RW session)", rv, i);
    let mut app = 7u64;
    let mut sn = 0;
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION,
        &mut app as *mut _ as *mut c_void,
        Some(notify),
        &mut sn
    );
    r.check(
        "session.open.notify",
        "C_OpenSession(SERIAL, pApplication, Notify)",
        rv,
        "",
    );
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    call!(m, C_GetTokenInfo, slot, &mut t);
    r.fact(
        "session.count",
        "C_GetTokenInfo with 3 sessions (1 RW) open",
        format!(
            "count {} rwCount {}",
            count(t.ulSessionCount),
            count(t.ulRwSessionCount)
        ),
    );
    let rv = call!(m, C_CloseSession, sn);
    r.check("session.close", "C_CloseSession", rv, "");
    let rv = call!(m, C_CloseSession, sn);
    r.check(
        "session.close.again",
        "C_CloseSession(closed handle)",
        rv,
        "",
    );
    let (rv, _) = open_session(m, BOGUS_SLOT, CKF_SERIAL_SESSION);
    r.check(
        "session.open.bogus_slot",
        "C_OpenSession(bogus slot)",
        rv,
        "",
    );
    if let Some(other) = other {
        let (rv, s) = open_session(m, other, CKF_SERIAL_SESSION);
        r.check(
            "session.open.other_slot",
            "C_OpenSession(other slot)",
            rv,
            "",
        );
        if rv == CKR_OK {
            call!(m, C_CloseSession, s);
        }
    }
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION,
        null_mut(),
        None,
        null_mut()
    );
    r.check("session.open.null", "C_OpenSession(phSession NULL)", rv, "");
    let (rv, _) = session_info(m, BOGUS_HANDLE);
    r.check(
        "session.info.bogus",
        "C_GetSessionInfo(bogus handle)",
        rv,
        "",
    );
    let rv = call!(m, C_GetSessionInfo, ro, null_mut());
    r.check("session.info.null", "C_GetSessionInfo(NULL)", rv, "");

    // Login state is per token: both sessions follow it.
    let pin = o.pin.as_bytes();
    let rv = login(m, ro, CKU_USER, pin);
    r.check("login.user", "C_Login(USER, pin)", rv, "");
    let (_, a) = session_info(m, ro);
    let (_, b) = session_info(m, rw);
    r.fact(
        "login.user.states",
        "C_GetSessionInfo of the RO and RW session",
        format!("{a}; {b}"),
    );
    let rv = login(m, rw, CKU_USER, pin);
    r.check("login.user.again", "C_Login(USER) again", rv, "");
    let rv = call!(m, C_Logout, rw);
    r.check("logout", "C_Logout", rv, "");
    let (_, a) = session_info(m, ro);
    r.fact("logout.state", "C_GetSessionInfo after logout", a);
    let rv = call!(m, C_Logout, ro);
    r.check("logout.again", "C_Logout again", rv, "");
    let rv = login(m, ro, CKU_USER, b"99999999");
    r.check("login.wrong_pin", "C_Login(USER, wrong pin)", rv, "");
    if rv == CKR_OK {
        call!(m, C_Logout, ro);
    }
    let rv = login(m, ro, CKU_SO, pin);
    r.check("login.so", "C_Login(SO) with a RO session open", rv, "");
    if rv == CKR_OK {
        call!(m, C_Logout, ro);
    }
    let rv = login(m, ro, 5, pin);
    r.check("login.bad_user_type", "C_Login(user type 5)", rv, "");
    let rv = login(m, ro, CKU_CONTEXT_SPECIFIC, pin);
    r.check(
        "login.context_specific",
        "C_Login(CONTEXT_SPECIFIC) with no operation",
        rv,
        "",
    );
    let rv = login(m, BOGUS_HANDLE, CKU_USER, pin);
    r.check("login.bogus_session", "C_Login(bogus session)", rv, "");
    let rv = call!(m, C_CloseAllSessions, slot);
    r.check(
        "session.close_all",
        "C_CloseAllSessions(token slot)",
        rv,
        "",
    );
    let (rv, _) = session_info(m, ro);
    r.check(
        "session.close_all.after",
        "C_GetSessionInfo(closed by CloseAllSessions)",
        rv,
        "",
    );
    let rv = call!(m, C_CloseAllSessions, BOGUS_SLOT);
    r.check(
        "session.close_all.bogus",
        "C_CloseAllSessions(bogus slot)",
        rv,
        "",
    );
}
