//! ISO commands: MANAGE CHANNEL (`70`) and SELECT by AID (`A4`).

use super::*;

impl Card {
    pub(super) fn manage_channel(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        if a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        let max = self.max_channels() as usize;
        if max == 0 {
            // A card with the basic channel only (ISO 7816-4: "logical channel not supported").
            return Err(sw::CHANNEL_NOT_SUPPORTED);
        }
        match a.p1 {
            0x00 => {
                let target = if a.p2 == 0 {
                    match (1..=max).find(|&i| self.channels[i].is_none()) {
                        Some(i) => i,
                        None => return Err(sw::FUNC_NOT_SUPPORTED),
                    }
                } else {
                    let n = a.p2 as usize;
                    if n > max {
                        return Err(sw::WRONG_P1P2);
                    }
                    if self.channels[n].is_some() {
                        return Err(sw::FUNC_NOT_SUPPORTED);
                    }
                    n
                };
                // Opened from a non-basic channel: the applet selected there is selected
                // on the new channel too (fresh applet state), as in ISO 7816-4.
                let inherit = ch != 0 && self.chan(ch).applet_selected;
                self.channels[target] = Some(Channel {
                    applet_selected: inherit,
                    ..Channel::default()
                });
                let open = self.open_channel_count();
                self.stats.max_open_channels = self.stats.max_open_channels.max(open);
                if a.p2 == 0 {
                    Ok(Reply::free(vec![target as u8]))
                } else {
                    Ok(Reply::ok())
                }
            }
            0x80 => {
                let n = a.p2 as usize;
                // A channel above a lowered limit can still be closed.
                if n == 0 || !matches!(self.channels.get(n), Some(Some(_))) {
                    return Err(sw::WRONG_P1P2);
                }
                self.channels[n] = None;
                Ok(Reply::ok())
            }
            _ => Err(sw::WRONG_P1P2),
        }
    }

    pub(super) fn select(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0x04 || !matches!(a.p2, 0x00 | 0x04 | 0x0C) {
            return Err(sw::WRONG_P1P2);
        }
        if !a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        if a.data != self.aid() {
            return Err(sw::NOT_FOUND);
        }
        let c = self.chan(ch);
        c.reset_applet_state();
        c.applet_selected = true;
        Ok(Reply::ok())
    }
}
