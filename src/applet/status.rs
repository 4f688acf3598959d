//! ISO 7816-4 / IoT.05 status words, as the card sends them.

use std::fmt;

/// The two status bytes ending every card answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const OK: StatusWord = StatusWord(0x9000);
    /// Success, and more data follows (the object list's continuation pages).
    pub const MORE_DATA: StatusWord = StatusWord(0x6300);
    /// Success, and a remote-management session has completed since the last command (G4).
    pub const REMOTE_UPDATE_COMPLETED: StatusWord = StatusWord(0x63CF);
    pub const WRONG_LENGTH: StatusWord = StatusWord(0x6700);
    /// Our logical channel is not open any more: the card was reset or power-cycled.
    pub const CHANNEL_NOT_OPEN: StatusWord = StatusWord(0x6881);
    pub const SECURITY_STATUS_NOT_SATISFIED: StatusWord = StatusWord(0x6982);
    /// A remote-management session is updating the object (IoT.04 G4).
    pub const OBJECT_BEING_UPDATED: StatusWord = StatusWord(0x6984);
    pub const CONDITIONS_OF_USE_NOT_SATISFIED: StatusWord = StatusWord(0x6985);
    /// The object changed during the operation, or the card's capacity is reached.
    pub const OBJECT_CHANGED: StatusWord = StatusWord(0x6989);
    pub const WRONG_DATA: StatusWord = StatusWord(0x6A80);
    pub const FUNCTION_NOT_SUPPORTED: StatusWord = StatusWord(0x6A81);
    pub const NOT_FOUND: StatusWord = StatusWord(0x6A82);
    pub const NOT_ENOUGH_MEMORY: StatusWord = StatusWord(0x6A84);
    pub const INCORRECT_P1_P2: StatusWord = StatusWord(0x6A86);
    pub const REFERENCED_DATA_NOT_FOUND: StatusWord = StatusWord(0x6A88);
    pub const INS_NOT_SUPPORTED: StatusWord = StatusWord(0x6D00);
    pub const CLA_NOT_SUPPORTED: StatusWord = StatusWord(0x6E00);

    pub fn from_bytes(sw1: u8, sw2: u8) -> StatusWord {
        StatusWord(u16::from_be_bytes([sw1, sw2]))
    }

    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub fn sw2(self) -> u8 {
        self.0 as u8
    }

    /// `61xx` (T=0) or `9Fxx` (SIM toolkit): `xx` more bytes wait for GET RESPONSE.
    pub fn response_waiting(self) -> bool {
        matches!(self.sw1(), 0x61 | 0x9F)
    }

    /// `6Cxx`: wrong Le, re-send with Le = `xx`.
    pub fn wrong_le(self) -> bool {
        self.sw1() == 0x6C
    }

    /// `91xx`: success with a proactive command pending (UICC).
    pub fn ok_with_proactive_command(self) -> bool {
        self.sw1() == 0x91
    }

    /// What the status word means, for log lines and error details.
    pub fn meaning(self) -> &'static str {
        match self.0 {
            0x6881 => "logical channel not open",
            0x6984 => "the object is being updated by a remote-management session",
            0x6989 => "the object changed during the operation, or the card's capacity is reached",
            0x6A84 => "not enough memory on the card",
            0x6982 => "security status not satisfied",
            0x6985 => "conditions of use not satisfied",
            0x6A82 | 0x6A88 => "no such object on the card",
            0x6D00 | 0x6E00 => "instruction or class not supported",
            0x6A80 | 0x6700 | 0x6A86 => "the card rejected the command's data",
            0x6400 | 0x6F00 => "card error",
            _ => "unexpected status",
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}
