//! The checklist (the ecosystem reference §6.3), run identically against any module.
//!
//! Every check prints one normalised line (see `report.rs`). Values that differ between two
//! correct tokens by nature (slot IDs, serial numbers, library versions, signature bytes) are
//! never printed; their properties are (padding, lengths, "verifies").
//!
//! One file per chapter of the PKCS#11 specification; `run` below fixes the order of the checks.
//!
//! | file | what |
//! |---|---|
//! | `general.rs` | 5.4 general-purpose functions: before `C_Initialize`, interfaces, the `C_Initialize` matrix, `C_GetInfo` |
//! | `slot_token.rs` | 5.5 slot and token management: slot list, slot and token information |
//! | `mechanisms.rs` | 5.5 mechanism list and information |
//! | `sessions.rs` | 5.6 session management and login |
//! | `objects.rs` | 5.7 object search (find templates) and the names of the card's objects |
//! | `object_classes.rs` | 4.x the attributes of each object class (common, key, private/public/secret key, certificate) and how values are shown |
//! | `attributes.rs` | 5.7 `C_GetAttributeValue` |
//! | `signing.rs` | 5.13 and 5.15 signing and verifying |
//! | `digest.rs` | 5.12 message digesting |
//! | `random.rs` | 5.19 random number generation |
//! | `unsupported.rs` | functions the token does not offer (operation state, PIN and token set-up, encryption, dual-function, key management, parallel functions, 3.0 additions) |
//! | `concurrency.rs` | threads and `fork` |
//! | `writes.rs` | 5.7 and 5.18 object writes and key-pair generation (last: they change the token) |
//! | `helpers.rs` | shared pieces: sessions and login, templates, find, attribute reads, the call shapes several functions share, one signature and its host verification |

mod attributes;
mod concurrency;
mod digest;
mod general;
mod helpers;
mod mechanisms;
mod object_classes;
mod objects;
mod random;
mod sessions;
mod signing;
mod slot_token;
mod unsupported;
mod writes;

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;

use crate::call;
use crate::module::Module;
use crate::report::Report;

pub struct Options {
    pub token_label: String,
    pub pin: String,
    pub threads: usize,
    pub signatures_per_thread: usize,
    /// Also write to the token in a R/W session (`writes::token_writes`): only on a token of
    /// this run's own.
    pub token_writes: bool,
}

const BOGUS_SLOT: CK_SLOT_ID = 0xDEAD_BEEF;
const BOGUS_HANDLE: CK_ULONG = 0x7FFF_FF01;
const BOGUS_ATTRIBUTE: CK_ATTRIBUTE_TYPE = 0x7FFF_FFF0;
const BOGUS_MECHANISM: CK_MECHANISM_TYPE = 0x8000_1234;
const CONFIG_STRING: &[u8] = b"\0"; // an empty TOML document / a non-NULL pReserved

pub fn run(m: &Module, o: &Options, r: &mut Report) {
    general::before_init(m, r);
    general::interfaces(m, r);
    general::init_matrix(m, r);
    let rv = call!(
        m,
        C_Initialize,
        &mut helpers::os_locking_args() as *mut _ as *mut c_void
    );
    r.check("init.for_checks", "C_Initialize(OS_LOCKING_OK)", rv, "");
    if rv != CKR_OK {
        return;
    }
    general::info(m, r);
    let Some((slot, other)) = slot_token::slots(m, o, r) else {
        return;
    };
    slot_token::token(m, slot, other, r);
    mechanisms::mechanisms(m, slot, r);
    sessions::sessions(m, o, slot, other, r);
    let s = helpers::open(m, slot, CKF_SERIAL_SESSION);
    let objs = objects::objects(m, s, r);
    attributes::attributes(m, s, &objs, r);
    signing::signing(m, s, &objs, r);
    digest::digests(m, s, r);
    random::random(m, s, r);
    unsupported::unsupported(m, o, slot, s, &objs, r);
    concurrency::threads(m, o, slot, &objs, r);
    concurrency::fork(m, slot, r);
    writes::writes(m, slot, &objs, r);
    if o.token_writes {
        writes::token_writes(m, slot, &objs, r);
    }
    let rv = call!(m, C_CloseAllSessions, slot);
    r.check("end.close_all", "C_CloseAllSessions(token slot)", rv, "");
    let rv = call!(m, C_Finalize, null_mut());
    r.check("end.finalize", "C_Finalize(NULL)", rv, "");
}
