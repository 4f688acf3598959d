//! 5.19 Random number generation.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::BOGUS_HANDLE;
use crate::call;
use crate::module::Module;
use crate::report::Report;

pub(super) fn random(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) {
    for n in [0usize, 1, 32, 1000] {
        let mut buf = vec![0u8; n.max(1)];
        let rv = call!(m, C_GenerateRandom, s, buf.as_mut_ptr(), n as CK_ULONG);
        let zero = n >= 32 && buf.iter().all(|&b| b == 0);
        r.check(
            &format!("random.{n}"),
            &format!("C_GenerateRandom({n})"),
            rv,
            if zero { "ALL ZERO" } else { "" },
        );
    }
    let rv = call!(m, C_GenerateRandom, s, null_mut(), 10);
    r.check("random.null", "C_GenerateRandom(NULL, 10)", rv, "");
    let mut buf = [0u8; 4];
    let rv = call!(m, C_GenerateRandom, BOGUS_HANDLE, buf.as_mut_ptr(), 4);
    r.check(
        "random.bogus_session",
        "C_GenerateRandom(bogus session)",
        rv,
        "",
    );
    let mut seed = *b"seed";
    let rv = call!(m, C_SeedRandom, s, seed.as_mut_ptr(), 4);
    r.check("random.seed", "C_SeedRandom(4 bytes)", rv, "");
}
