//! STORE DATA of the provisioning profile (GlobalPlatform class), and the probe telling whether
//! a card implements it.

use super::apdu::{ClassStyle, Ins, Response, Trace};
use super::channel::{AppletChannel, ok_data};
use super::error::{AppletError, Result};
use super::status::StatusWord;
use super::tlv;

impl AppletChannel<'_> {
    /// One BER-TLV (`tag` = sub-command) split into blocks (P2 = block number, P1 b8 on the
    /// last block; P1 b1 when an answer is expected). The card applies the sequence on its last
    /// block only, so a cut transfer changes nothing. Returns the last answer (or the first
    /// that was not `9000`).
    fn store_data_raw(&mut self, tag: u8, value: &[u8], expect_answer: bool) -> Result<Response> {
        let mut payload = Vec::with_capacity(value.len() + 4);
        tlv::push(&mut payload, tag, value);
        let block_size = self.max_command_data().max(1);
        let blocks: Vec<&[u8]> = payload.chunks(block_size).collect();
        if blocks.len() > 256 {
            return Err(AppletError::ObjectTooLarge);
        }
        // STORE DATA is a GlobalPlatform command: proprietary class.
        self.in_class(ClassStyle::Proprietary, |ch| {
            let mut last_response = Ok(Response {
                data: Vec::new(),
                sw: StatusWord::OK,
            });
            for (i, block) in blocks.iter().enumerate() {
                let last = i + 1 == blocks.len();
                let p1 = if last { 0x80 } else { 0x00 } | if expect_answer { 0x01 } else { 0x00 };
                let le = if last && expect_answer {
                    Some(0x00)
                } else {
                    None
                };
                last_response = ch.exchange(Ins::StoreData, p1, i as u8, block, le, Trace::Full);
                if !matches!(&last_response, Ok(r) if r.is_ok()) {
                    break;
                }
            }
            last_response
        })
    }

    /// STORE DATA, failing on any status but `9000`.
    pub fn store_data(&mut self, tag: u8, value: &[u8], expect_answer: bool) -> Result<Vec<u8>> {
        let resp = self.store_data_raw(tag, value, expect_answer)?;
        ok_data(resp, "STORE DATA")
    }

    /// Whether the card implements the provisioning profile: a select of an object that does
    /// not exist answers "not found" on such a card and "unknown instruction" elsewhere. It
    /// changes nothing on the card.
    pub fn supports_provisioning(&mut self) -> Result<bool> {
        let mut probe = Vec::new();
        tlv::push(&mut probe, 0x83, &[0xFF, 0xFE, 0xFD, 0xFC]);
        let resp = self.store_data_raw(0x75, &probe, false)?;
        Ok(matches!(resp.sw, StatusWord::OK | StatusWord::NOT_FOUND))
    }
}
