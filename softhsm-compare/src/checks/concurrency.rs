//! Threads (several sessions signing at once) and `fork` (the child with and without
//! re-initialising, the parent afterwards).

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;

use super::Options;
use super::helpers::{
    attr, attr_bytes, digest_of, find, get_bytes, host_verify, open, open_session, os_locking_args,
    session_info, sign_once, slot_list, slot_with_label, token_label,
};
use super::objects::Objects;
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::Report;

pub(super) fn threads(m: &Module, o: &Options, slot: CK_SLOT_ID, objs: &Objects, r: &mut Report) {
    let (Some(k), Some(p)) = (objs.get("privkey.client"), objs.get("pubkey.client")) else {
        return;
    };
    let s0 = open(m, slot, CKF_SERIAL_SESSION);
    let point = get_bytes(m, s0, p, CKA_EC_POINT);
    call!(m, C_CloseSession, s0);
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let point = &point;
                scope.spawn(move || {
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    let (rv, s) = open_session(m, slot, CKF_SERIAL_SESSION);
                    if rv != CKR_OK {
                        return (0, vec![format!("C_OpenSession {}", rv_name(rv))]);
                    }
                    for i in 0..o.signatures_per_thread {
                        let data = digest_of(
                            CKM_ECDSA_SHA256,
                            format!("thread {t} signature {i}").as_bytes(),
                        );
                        let (rv, sig) = sign_once(m, s, CKM_ECDSA, k, &data);
                        if rv != CKR_OK {
                            errors.push(format!("C_Sign {}", rv_name(rv)));
                        } else if host_verify(point, &data, &sig) == "host-verified" {
                            ok += 1;
                        } else {
                            errors.push("bad signature".into());
                        }
                        let mut rnd = [0u8; 16];
                        let rv = call!(m, C_GenerateRandom, s, rnd.as_mut_ptr(), 16);
                        if rv != CKR_OK {
                            errors.push(format!("C_GenerateRandom {}", rv_name(rv)));
                        }
                    }
                    call!(m, C_CloseSession, s);
                    (ok, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|(n, _)| n).sum();
    let mut errors: Vec<String> = results.into_iter().flat_map(|(_, e)| e).collect();
    errors.sort();
    errors.dedup();
    r.fact(
        "threads.sign",
        &format!(
            "{} threads x {} C_Sign(ECDSA) + C_GenerateRandom, own session each",
            o.threads, o.signatures_per_thread
        ),
        format!(
            "{ok}/{} verified; errors: {}",
            o.threads * o.signatures_per_thread,
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            }
        ),
    );
}

// --- 14. fork ------------------------------------------------------------------------------

/// Runs `child` in a forked child (bounded by alarm) and returns the lines it wrote.
fn in_child(child: impl FnOnce() -> Vec<String>) -> Vec<String> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe {
            libc::close(fds[0]);
            libc::alarm(60);
        }
        let lines = child();
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let _ = w.write_all(lines.join("\n").as_bytes());
        drop(w);
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::close(fds[1]) };
    let mut text = String::new();
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let _ = rd.read_to_string(&mut text);
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        lines.push(format!(
            "fork.child_died | child process | status {status:#x}"
        ));
    }
    lines
}

fn sign_in_fresh_session(m: &Module, label: &str) -> String {
    let all = slot_list(m, CK_TRUE);
    let Some(slot) = slot_with_label(m, &all, label) else {
        return format!("token not found among {} slots", all.len());
    };
    let (rv, s) = open_session(m, slot, CKF_SERIAL_SESSION);
    if rv != CKR_OK {
        return format!("C_OpenSession {}", rv_name(rv));
    }
    let class = CKO_PRIVATE_KEY;
    let (_, keys) = find(
        m,
        s,
        &mut [attr(CKA_CLASS, &class), attr_bytes(CKA_LABEL, b"client")],
    );
    let (_, pubs) = find(
        m,
        s,
        &mut [
            attr_bytes(CKA_LABEL, b"client"),
            attr(CKA_CLASS, &CKO_PUBLIC_KEY),
        ],
    );
    let (Some(&k), Some(&p)) = (keys.first(), pubs.first()) else {
        return "key pair not found".into();
    };
    let point = get_bytes(m, s, p, CKA_EC_POINT);
    let data = digest_of(CKM_ECDSA_SHA256, b"fork");
    let (rv, sig) = sign_once(m, s, CKM_ECDSA, k, &data);
    call!(m, C_CloseSession, s);
    if rv != CKR_OK {
        return format!("C_Sign {}", rv_name(rv));
    }
    host_verify(&point, &data, &sig).to_string()
}

pub(super) fn fork(m: &Module, slot: CK_SLOT_ID, r: &mut Report) {
    let label = token_label(m, slot).unwrap_or_default();
    let mut parent: CK_INFO = unsafe { std::mem::zeroed() };
    call!(m, C_GetInfo, &mut parent);
    // A session of the parent, open across the fork.
    let ps = open(m, slot, CKF_SERIAL_SESSION);

    // 1. The child uses the parent's state without re-initialising.
    let lines = in_child(|| {
        let (rv, _) = session_info(m, ps);
        let mut n = 0;
        let rv2 = call!(m, C_GetSlotList, CK_TRUE, null_mut(), &mut n);
        vec![
            format!(
                "fork.no_reinit.session | child: C_GetSessionInfo(parent's session) | {}",
                rv_name(rv)
            ),
            format!(
                "fork.no_reinit.slot_list | child: C_GetSlotList | {}",
                rv_name(rv2)
            ),
        ]
    });
    lines.into_iter().for_each(|l| r.push(l));

    // 2. The child calls C_Initialize (pkcs11-tool --test-fork, the PKCS#11 usage guide).
    let lines = in_child(|| {
        let rv = call!(
            m,
            C_Initialize,
            &mut os_locking_args() as *mut _ as *mut c_void
        );
        let mut out = vec![format!(
            "fork.init | child: C_Initialize(OS_LOCKING_OK) | {}",
            rv_name(rv)
        )];
        let mut info: CK_INFO = unsafe { std::mem::zeroed() };
        call!(m, C_GetInfo, &mut info);
        let same = info.cryptokiVersion.major == parent.cryptokiVersion.major
            && info.cryptokiVersion.minor == parent.cryptokiVersion.minor
            && info.manufacturerID == parent.manufacturerID
            && info.libraryDescription == parent.libraryDescription
            && info.flags == parent.flags;
        out.push(format!(
            "fork.init.info_same | child: C_GetInfo equals the parent's | {same}"
        ));
        out.push(format!(
            "fork.init.sign | child: open session, find, C_Sign(ECDSA) | {}",
            sign_in_fresh_session(m, &label)
        ));
        out.push(format!(
            "fork.init.finalize | child: C_Finalize | {}",
            rv_name(call!(m, C_Finalize, null_mut()))
        ));
        out
    });
    lines.into_iter().for_each(|l| r.push(l));

    // 3. The child finalizes first, then initialises (what pkcs11-provider does).
    let lines = in_child(|| {
        let rv1 = call!(m, C_Finalize, null_mut());
        let rv2 = call!(
            m,
            C_Initialize,
            &mut os_locking_args() as *mut _ as *mut c_void
        );
        vec![
            format!(
                "fork.reinit.finalize | child: C_Finalize | {}",
                rv_name(rv1)
            ),
            format!(
                "fork.reinit.init | child: C_Initialize(OS_LOCKING_OK) | {}",
                rv_name(rv2)
            ),
            format!(
                "fork.reinit.sign | child: open session, find, C_Sign(ECDSA) | {}",
                sign_in_fresh_session(m, &label)
            ),
        ]
    });
    lines.into_iter().for_each(|l| r.push(l));

    let (rv, _) = session_info(m, ps);
    r.check(
        "fork.parent.session",
        "parent after the children: C_GetSessionInfo(its session)",
        rv,
        "",
    );
    r.fact(
        "fork.parent.sign",
        "parent after the children: C_Sign(ECDSA)",
        sign_in_fresh_session(m, &label),
    );
    call!(m, C_CloseSession, ps);
}
