//! READ FILE (`B0`), READ PUBLIC KEY (`CD`) and GET RANDOM (`84`).

use super::*;

impl Card {
    pub(super) fn read_file(&mut self, a: &Apdu<'_>) -> CmdResult {
        let tlvs = parse_tlvs(a.data)?;
        let f = self.find_file(&tlvs)?;
        if f.state != ObjectState::Activated || f.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let offset = ((a.p1 as usize) << 8) | a.p2 as usize;
        if offset > f.content.len() {
            return Err(sw::WRONG_P1P2);
        }
        let remaining = f.content.len() - offset;
        let n = remaining.min(256).min(a.le_len().unwrap_or(256));
        Ok(Reply::free(f.content[offset..offset + n].to_vec()))
    }

    pub(super) fn read_public_key(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_public(&tlvs)?;
        if k.state != ObjectState::Activated || k.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let point = k.point.as_deref().ok_or(sw::CONDITIONS)?;
        Ok(Reply::data(public_key_format(point)))
    }

    pub(super) fn get_random(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        let n = a.le_len().ok_or(sw::WRONG_LENGTH)?;
        let mut buf = vec![0u8; n];
        getrandom::fill(&mut buf).map_err(|_| sw::UNKNOWN)?;
        Ok(Reply::free(buf))
    }
}
