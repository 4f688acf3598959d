//! The APDU pipeline of one card: CLA → logical channel, Le handling, `61xx` / GET RESPONSE,
//! `6Cxx`, the `63CF` after a remote session, and the INS → handler table.

use super::*;

impl Card {
    pub(crate) fn process(&mut self, command: &[u8]) -> Vec<u8> {
        if command.len() < 4 {
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        }
        let Some((ch, proprietary)) = decode_cla(command[0]) else {
            return sw_bytes(sw::CLA_NOT_SUPPORTED).to_vec();
        };
        if !matches!(self.channels.get(ch), Some(Some(_))) {
            return sw_bytes(sw::CHANNEL_NOT_SUPPORTED).to_vec();
        }
        let Some(apdu) = Apdu::parse(command) else {
            if let Some(Some(c)) = self.channels.get_mut(ch) {
                c.pending = None;
                c.list_cursor = None;
                c.store = None;
            }
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        };
        if apdu.ins == 0xC0 {
            return self.get_response(ch, &apdu);
        }
        let saved_cursor = {
            let c = self.chan(ch);
            c.pending = None;
            let cursor = c.list_cursor.clone();
            if !(apdu.ins == 0xCB && apdu.p1 == 0x01) {
                c.list_cursor = None;
            }
            if apdu.ins != 0xE2 {
                c.store = None;
            }
            cursor
        };
        let applet_cmd = !matches!((apdu.ins, proprietary), (0x70 | 0xA4, false));
        let result = self.dispatch(ch, proprietary, &apdu);
        let reply = match result {
            Ok(r) => r,
            Err(s) => return sw_bytes(s).to_vec(),
        };
        self.finish_reply(ch, &apdu, reply, saved_cursor, applet_cmd)
    }

    /// `63CF` instead of `9000` for the first successful applet command on a channel after
    /// a remote management session ended (consumes the channel's flag).
    fn remote_sw(&mut self, ch: usize, applet_cmd: bool, sw: u16) -> u16 {
        if applet_cmd && sw == sw::OK {
            let c = self.chan(ch);
            if std::mem::take(&mut c.remote_completed) {
                return sw::REMOTE_COMPLETED;
            }
        }
        sw
    }

    fn finish_reply(
        &mut self,
        ch: usize,
        apdu: &Apdu<'_>,
        reply: Reply,
        saved_cursor: Option<ListCursor>,
        applet_cmd: bool,
    ) -> Vec<u8> {
        let Reply { data, sw, le_rule } = reply;
        if data.is_empty() {
            return sw_bytes(self.remote_sw(ch, applet_cmd, sw)).to_vec();
        }
        if self.options.t0_style && apdu.ins != 0x70 {
            let sw = self.remote_sw(ch, applet_cmd, sw);
            let n = data.len().min(256);
            self.chan(ch).pending = Some(Pending {
                data,
                offset: 0,
                final_sw: sw,
            });
            return vec![0x61, n as u8];
        }
        if le_rule == LeRule::Exact
            && let Some(le) = apdu.le
            && le != 0
            && (le as usize) < data.len()
            && data.len() <= 256
        {
            // Keep nothing: undo object-list paging progress.
            self.chan(ch).list_cursor = saved_cursor;
            return vec![0x6C, data.len() as u8];
        }
        let sw = self.remote_sw(ch, applet_cmd, sw);
        if data.len() > 256 {
            let rest = data.len() - 256;
            let mut out = data[..256].to_vec();
            self.chan(ch).pending = Some(Pending {
                data,
                offset: 256,
                final_sw: sw,
            });
            out.extend_from_slice(&[0x61, rest.min(256) as u8]);
            return out;
        }
        let mut out = data;
        out.extend_from_slice(&sw_bytes(sw));
        out
    }

    fn get_response(&mut self, ch: usize, apdu: &Apdu<'_>) -> Vec<u8> {
        let c = self.chan(ch);
        if apdu.has_lc {
            c.pending = None;
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        }
        if apdu.p1 != 0 || apdu.p2 != 0 {
            return sw_bytes(sw::WRONG_P1P2).to_vec();
        }
        let Some(mut p) = c.pending.take() else {
            return sw_bytes(sw::CONDITIONS).to_vec();
        };
        let want = apdu.le_len().unwrap_or(256);
        let remaining = p.data.len() - p.offset;
        let n = want.min(remaining);
        let mut out = p.data[p.offset..p.offset + n].to_vec();
        p.offset += n;
        let left = p.data.len() - p.offset;
        if left > 0 {
            out.extend_from_slice(&[0x61, left.min(256) as u8]);
            c.pending = Some(p);
        } else {
            out.extend_from_slice(&sw_bytes(p.final_sw));
        }
        out
    }

    fn dispatch(&mut self, ch: usize, proprietary: bool, a: &Apdu<'_>) -> CmdResult {
        match (a.ins, proprietary) {
            (0x70, false) => return self.manage_channel(ch, a),
            (0xA4, false) => return self.select(ch, a),
            _ => {}
        }
        if !self.chan(ch).applet_selected {
            return Err(sw::INS_NOT_SUPPORTED);
        }
        match a.ins {
            0xCB => self.get_data(ch, a),
            0xB0 => self.read_file(a),
            0xCD => self.read_public_key(a),
            0x84 => self.get_random(a),
            0x2A => self.session_init(ch, a, SessionKind::Sign),
            0x2C => self.session_init(ch, a, SessionKind::Verify),
            0x24 => self.session_init(ch, a, SessionKind::PutKey),
            0x2B => self.sign_update(ch, a),
            0x2D => self.verify_update(ch, a),
            0xD8 => self.put_key_update(ch, a),
            0xB9 => self.generate_key_pair(a),
            0x46 => self.compute_dh(a),
            0x48 => self.compute_prf(a),
            0x4A => self.compute_hkdf(a),
            0xE2 => self.store_data(ch, a),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }
}
