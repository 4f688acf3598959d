//! Status words used by the simulator.

/// Success.
pub const OK: u16 = 0x9000;
/// More data available (object list paging).
pub const MORE_DATA: u16 = 0x6300;
/// Success, and a remote management session has completed since (G4).
pub const REMOTE_COMPLETED: u16 = 0x63CF;
/// Referenced object is being updated by a remote management session (G4).
pub const REMOTE_UPDATING: u16 = 0x6984;
/// Wrong length (Lc/Le inconsistent, data where none is allowed).
pub const WRONG_LENGTH: u16 = 0x6700;
/// Logical channel not supported / not open.
pub const CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
/// Conditions of use not satisfied.
pub const CONDITIONS: u16 = 0x6985;
/// Maximum capacity reached (too many sessions / objects), or: the object of a
/// multi-APDU operation was changed underneath it (remote session, STORE DATA).
pub const CAPACITY: u16 = 0x6989;
/// Incorrect data (malformed TLV, missing tag, bad value).
pub const WRONG_DATA: u16 = 0x6A80;
/// Function not supported (no free logical channel, channel already open).
pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
/// Referenced object / AID not found.
pub const NOT_FOUND: u16 = 0x6A82;
/// Not enough memory (file slot or store size).
pub const NO_MEMORY: u16 = 0x6A84;
/// Incorrect P1/P2.
pub const WRONG_P1P2: u16 = 0x6A86;
/// Referenced data not found (COMPUTE PRF / HKDF: no such secret key).
pub const REF_NOT_FOUND: u16 = 0x6A88;
/// Instruction not supported (or applet not selected on the channel).
pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
/// VERIFY SIGNATURE: signature does not match.
pub const SIGNATURE_MISMATCH: u16 = 0x6D01;
/// Class not supported.
pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
/// Unknown error (internal failure, e.g. RNG).
pub const UNKNOWN: u16 = 0x6F00;
