//! One logical channel with the applet selected on it: every command goes through
//! [`AppletChannel::exchange`], where the `61xx` / `6Cxx` / `9Fxx` / `91xx` / `63CF` rules are
//! applied in exactly one place, and the APDU trace is written (redacted where secrets travel).

use log::{debug, log_enabled, trace};

use super::apdu::{ClassStyle, Ins, MAX_APDU_DATA, Response, Trace, build_apdu, cla_for_channel};
use super::card_read::CardContents;
use super::error::{AppletError, Result};
use super::status::StatusWord;
use crate::transport::Transmit;

/// Safety net against a card that answers `61xx` forever.
const MAX_GET_RESPONSE_ROUNDS: usize = 64;

pub struct AppletChannel<'a> {
    pipe: &'a mut dyn Transmit,
    channel: u8,
    style: ClassStyle,
    /// A command answered `63CF`: a remote-management session on the card has completed.
    pub remote_update_completed: bool,
    /// How often in this turn the card's objects may have changed: a write was sent
    /// (whatever its outcome), or the card said so (`63CF`, `6989`).
    pub(super) content_changes: u32,
    /// A whole card read made in this turn after its last change, for the content cache.
    pub(super) fresh_read: Option<CardContents>,
}

impl<'a> AppletChannel<'a> {
    pub fn new(pipe: &'a mut dyn Transmit, channel: u8, style: ClassStyle) -> Self {
        AppletChannel {
            pipe,
            channel,
            style,
            remote_update_completed: false,
            content_changes: 0,
            fresh_read: None,
        }
    }

    /// Notes that the card's objects may have changed: every process's view of them is out of
    /// date, including a read made earlier in this turn.
    pub(super) fn mark_content_changed(&mut self) {
        self.content_changes += 1;
        self.fresh_read = None;
    }

    fn cla(&self) -> u8 {
        cla_for_channel(self.channel, self.style)
    }

    /// Runs `f` with commands sent in `style` (STORE DATA is proprietary, SELECT
    /// inter-industry, whatever the applet's commands use).
    pub(super) fn in_class<R>(&mut self, style: ClassStyle, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = std::mem::replace(&mut self.style, style);
        let r = f(self);
        self.style = saved;
        r
    }

    /// The largest command data field one APDU carries on this path.
    pub(super) fn max_command_data(&self) -> usize {
        self.pipe.max_command_data().min(MAX_APDU_DATA)
    }

    fn send_raw(&mut self, apdu: &[u8], trace: Trace) -> Result<Response> {
        if log_enabled!(log::Level::Trace) {
            match trace {
                Trace::Full => trace!("ch{} > {}", self.channel, hex::encode_upper(apdu)),
                Trace::Redacted => trace!(
                    "ch{} > {} [{} data bytes redacted]",
                    self.channel,
                    hex::encode_upper(&apdu[..4.min(apdu.len())]),
                    apdu.len().saturating_sub(5)
                ),
            }
        }
        let raw = self.pipe.transmit(apdu)?;
        let resp = Response::from_raw(raw)?;
        if log_enabled!(log::Level::Trace) {
            match trace {
                Trace::Full => trace!(
                    "ch{} < {} {}",
                    self.channel,
                    hex::encode_upper(&resp.data),
                    resp.sw
                ),
                Trace::Redacted => trace!(
                    "ch{} < [{} bytes redacted] {}",
                    self.channel,
                    resp.data.len(),
                    resp.sw
                ),
            }
        }
        Ok(resp)
    }

    /// Sends one command and collects its whole answer: `61xx`/`9Fxx` are followed by GET
    /// RESPONSE, `6Cxx` re-sends with the right Le once, `91xx` counts as success.
    pub fn exchange(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<u8>,
        trace: Trace,
    ) -> Result<Response> {
        let cla = self.cla();
        let apdu = build_apdu(cla, ins, p1, p2, data, le)?;
        if matches!(ins, Ins::StoreData | Ins::GenerateKeyPair) {
            self.mark_content_changed();
        }
        let mut resp = self.send_raw(&apdu, trace)?;
        if resp.sw.wrong_le() {
            let apdu = build_apdu(cla, ins, p1, p2, data, Some(resp.sw.sw2()))?;
            resp = self.send_raw(&apdu, trace)?;
        }
        let mut collected = std::mem::take(&mut resp.data);
        let mut rounds = 0;
        while resp.sw.response_waiting() {
            rounds += 1;
            if rounds > MAX_GET_RESPONSE_ROUNDS {
                return Err(AppletError::Malformed("card keeps answering 61xx".into()));
            }
            let get_response = [cla, Ins::GetResponse as u8, 0x00, 0x00, resp.sw.sw2()];
            resp = self.send_raw(&get_response, trace)?;
            collected.append(&mut resp.data);
        }
        if resp.sw.ok_with_proactive_command() {
            resp.sw = StatusWord::OK;
        }
        if resp.sw == StatusWord::REMOTE_UPDATE_COMPLETED {
            // Success, and the card's objects may have changed (IoT.04 G4).
            debug!(
                "ch{}: card reports a completed remote-management session",
                self.channel
            );
            self.remote_update_completed = true;
            self.mark_content_changed();
            resp.sw = StatusWord::OK;
        }
        if resp.sw == StatusWord::OBJECT_CHANGED {
            self.mark_content_changed();
        }
        Ok(Response {
            data: collected,
            sw: resp.sw,
        })
    }

    /// [`exchange`](Self::exchange), failing on any status but success.
    pub(super) fn exchange_ok(
        &mut self,
        ins: Ins,
        p1: u8,
        p2: u8,
        data: &[u8],
        le: Option<u8>,
        command: &'static str,
    ) -> Result<Vec<u8>> {
        let resp = self.exchange(ins, p1, p2, data, le, Trace::Full)?;
        ok_data(resp, command)
    }

    /// Fails when `data` does not fit into one command of this path.
    pub(super) fn checked_length(&self, data: &[u8], command: &str) -> Result<()> {
        let room = self.max_command_data();
        if data.len() > room {
            return Err(AppletError::ParameterTooLong(format!(
                "{command}: {} data bytes exceed one APDU ({room})",
                data.len()
            )));
        }
        Ok(())
    }
}

/// The answer's data when the card said success, else the refusal.
pub(super) fn ok_data(resp: Response, command: &'static str) -> Result<Vec<u8>> {
    if resp.is_ok() {
        Ok(resp.data)
    } else {
        Err(AppletError::Status {
            command,
            sw: resp.sw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportError;

    struct Scripted(Vec<(Vec<u8>, Vec<u8>)>);
    impl Transmit for Scripted {
        fn transmit(&mut self, command: &[u8]) -> std::result::Result<Vec<u8>, TransportError> {
            let (expect, answer) = self.0.remove(0);
            assert_eq!(command, &expect[..]);
            Ok(answer)
        }
    }

    #[test]
    fn get_response_and_wrong_le_are_handled_once_here() {
        let mut pipe = Scripted(vec![
            (vec![0x01, 0xCD, 0, 0, 3, 0x85, 1, 1, 0], vec![0x6C, 0x47]),
            (
                vec![0x01, 0xCD, 0, 0, 3, 0x85, 1, 1, 0x47],
                vec![0x61, 0x02],
            ),
            (vec![0x01, 0xC0, 0, 0, 2], vec![0xAA, 0x61, 0x01]),
            (vec![0x01, 0xC0, 0, 0, 1], vec![0xBB, 0x90, 0x00]),
        ]);
        let mut ch = AppletChannel::new(&mut pipe, 1, ClassStyle::InterIndustry);
        let resp = ch
            .exchange(
                Ins::ReadPublicKey,
                0,
                0,
                &[0x85, 1, 1],
                Some(0),
                Trace::Full,
            )
            .unwrap();
        assert_eq!(resp.data, vec![0xAA, 0xBB]);
        assert!(resp.is_ok());
    }

    #[test]
    fn endless_61xx_is_an_error() {
        struct Endless;
        impl Transmit for Endless {
            fn transmit(&mut self, _: &[u8]) -> std::result::Result<Vec<u8>, TransportError> {
                Ok(vec![0x61, 0x10])
            }
        }
        let mut pipe = Endless;
        let mut ch = AppletChannel::new(&mut pipe, 1, ClassStyle::InterIndustry);
        let err = ch
            .exchange(Ins::GetRandom, 0, 0, &[], Some(0), Trace::Full)
            .unwrap_err();
        assert!(matches!(err, AppletError::Malformed(_)), "{err:?}");
    }
}
