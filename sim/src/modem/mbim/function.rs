//! The MBIM function of the modem: OPEN/CLOSE state, the MS UICC low-level access CIDs, the
//! BASIC_CONNECT queries a proxy or an LPA sends, and every other command refused.

use std::collections::BTreeMap;
use std::time::Duration;

use super::message::{
    self, BASIC_CONNECT, CLOSE_DONE, Command, FUNCTION_ERROR, HostMessage, InfoBuffer, OPEN_DONE,
    UICC_SERVICE, status,
};
use crate::modem::{ModemControl, cla_on_channel};
use crate::shared::CardSlot;

const CID_ATR: u32 = 1;
const CID_OPEN_CHANNEL: u32 = 2;
const CID_CLOSE_CHANNEL: u32 = 3;
const CID_APDU: u32 = 4;
const CID_DEVICE_CAPS: u32 = 1;
const CID_SUBSCRIBER_READY_STATUS: u32 = 2;

/// The function's state, shared by the pty and the proxy's clients.
pub(super) struct Function<C: CardSlot> {
    pub(super) control: ModemControl<C>,
    /// OPEN received (and no CLOSE since).
    pub(super) opened: bool,
    /// The host's MaxControlTransfer from OPEN.
    pub(super) max_transfer: usize,
    /// Logical channel → the channel group the host gave when opening it.
    channels: BTreeMap<u8, u32>,
    seen_epoch: u64,
    busy_counter: u64,
}

/// What to do with one host message.
pub(super) enum Outcome {
    /// Write these messages (already fragmented).
    Reply(Vec<Vec<u8>>),
    /// Hung: nothing is answered.
    Dropped,
}

impl<C: CardSlot> Function<C> {
    pub(super) fn new(control: ModemControl<C>) -> Function<C> {
        let seen_epoch = control.card().power_epoch();
        Function {
            control,
            opened: false,
            max_transfer: 4096,
            channels: BTreeMap::new(),
            seen_epoch,
            busy_counter: 0,
        }
    }

    pub(super) fn count_request(&self, name: &str) {
        self.control
            .count(|s| *s.requests.entry(name.to_string()).or_insert(0) += 1);
    }

    /// Handles one message: the hang, hang_after and delay options apply here.
    pub(super) fn handle(&mut self, msg: &HostMessage) -> Outcome {
        let opts = self.control.options();
        if opts.hang {
            self.control.count(|s| s.dropped += 1);
            return Outcome::Dropped;
        }
        let replies = self.answer(msg);
        self.control.update(|o| {
            if o.hang_after > 0 {
                o.hang_after -= 1;
                if o.hang_after == 0 {
                    o.hang = true;
                }
            }
        });
        if opts.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(opts.delay_ms));
        }
        self.control.count(|s| s.commands += 1);
        Outcome::Reply(replies)
    }

    fn answer(&mut self, msg: &HostMessage) -> Vec<Vec<u8>> {
        match msg {
            HostMessage::Open { tid, max_transfer } => {
                self.count_request("OPEN");
                self.opened = true;
                self.max_transfer = (*max_transfer as usize).clamp(64, 64 * 1024);
                vec![message::simple(OPEN_DONE, *tid, status::SUCCESS)]
            }
            HostMessage::Close { tid } => {
                self.count_request("CLOSE");
                self.opened = false;
                vec![message::simple(CLOSE_DONE, *tid, status::SUCCESS)]
            }
            HostMessage::Command(c) if !self.opened => {
                self.count_request("NOT_OPENED");
                vec![message::simple(
                    FUNCTION_ERROR,
                    c.tid,
                    message::ERROR_NOT_OPENED,
                )]
            }
            HostMessage::Command(c) => {
                let (status, info) = self.command(c);
                message::command_done(c.tid, &c.service, c.cid, status, &info, self.max_transfer)
            }
            HostMessage::Other { .. } => {
                self.count_request("OTHER");
                Vec::new()
            }
        }
    }

    /// Runs a command at the proxy's request (the proxy keeps the function open).
    pub(super) fn command_for_proxy(&mut self, c: &Command) -> Outcome {
        if !self.opened {
            self.opened = true;
            self.max_transfer = 4096;
        }
        self.handle(&HostMessage::Command(c.clone()))
    }

    fn command(&mut self, c: &Command) -> (u32, Vec<u8>) {
        match (c.service, c.cid, c.command_type) {
            (UICC_SERVICE, CID_ATR, 0) => {
                self.count_request("UICC_ATR");
                self.atr()
            }
            (UICC_SERVICE, CID_OPEN_CHANNEL, 1) => {
                self.count_request("UICC_OPEN_CHANNEL");
                self.open_channel(&c.info)
            }
            (UICC_SERVICE, CID_CLOSE_CHANNEL, 1) => {
                self.count_request("UICC_CLOSE_CHANNEL");
                self.close_channel(&c.info)
            }
            (UICC_SERVICE, CID_APDU, 1) => {
                self.count_request("UICC_APDU");
                self.apdu(&c.info)
            }
            (BASIC_CONNECT, CID_DEVICE_CAPS, 0) => {
                self.count_request("DEVICE_CAPS");
                (status::SUCCESS, device_caps())
            }
            (BASIC_CONNECT, CID_SUBSCRIBER_READY_STATUS, 0) => {
                self.count_request("SUBSCRIBER_READY_STATUS");
                let ready = if self.sync_presence() { 1 } else { 2 };
                let info = InfoBuffer::new(28)
                    .u32(ready)
                    .string("")
                    .string("")
                    .u32(0)
                    .u32(0)
                    .finish();
                (status::SUCCESS, info)
            }
            _ => {
                self.count_request("UNSUPPORTED");
                (status::NO_DEVICE_SUPPORT, Vec::new())
            }
        }
    }

    /// Forgets the channels when the SIM was power-cycled (reset, removed) since last time;
    /// false while it is out.
    fn sync_presence(&mut self) -> bool {
        if self.control.card_power_cycled(&mut self.seen_epoch) {
            self.channels.clear();
            self.channels_changed();
        }
        self.control.card().is_present()
    }

    fn channels_changed(&self) {
        self.control.record_open_sessions(self.channels.len());
    }

    fn busy(&mut self) -> bool {
        let every = self.control.options().busy_every;
        self.control.sim_busy(every, &mut self.busy_counter)
    }

    fn atr(&mut self) -> (u32, Vec<u8>) {
        if !self.sync_presence() {
            return (status::SIM_NOT_INSERTED, Vec::new());
        }
        let atr = self.control.card().atr();
        (
            status::SUCCESS,
            InfoBuffer::new(8).uicc_bytes(&atr).finish(),
        )
    }

    /// An APDU on `cla`'s channel, with 61xx answered by GET RESPONSE until the end.
    fn exchange(&self, command: &[u8]) -> Vec<u8> {
        let card = self.control.card();
        let mut r = card.transmit(command);
        let mut data = Vec::new();
        while let [.., 0x61, le] = r.as_slice() {
            let le = *le;
            data.extend_from_slice(&r[..r.len() - 2]);
            r = card.transmit(&[command[0], 0xC0, 0x00, 0x00, le]);
        }
        data.extend_from_slice(&r);
        data
    }

    fn open_channel(&mut self, info: &[u8]) -> (u32, Vec<u8>) {
        let (Some(aid), Some(p2), Some(group)) = (
            message::uicc_bytes_at(info, 0),
            message::u32_at(info, 8),
            message::u32_at(info, 12),
        ) else {
            return (status::INVALID_PARAMETERS, Vec::new());
        };
        if aid.len() > 32 || p2 > 255 {
            return (status::INVALID_PARAMETERS, Vec::new());
        }
        if !self.sync_presence() {
            return (status::SIM_NOT_INSERTED, Vec::new());
        }
        if self.busy() {
            return (status::BUSY, Vec::new());
        }
        let card = self.control.card();
        let failed = |code: u32, sw: &[u8]| {
            let sw = match sw {
                [.., a, b] => [*a, *b],
                _ => [0x6F, 0x00],
            };
            let info = InfoBuffer::new(16)
                .raw(&[sw[0], sw[1], 0, 0])
                .u32(0)
                .uicc_bytes(&[])
                .finish();
            (code, info)
        };
        let r = card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]);
        let ch = match r.as_slice() {
            [ch @ 1..=19, 0x90, 0x00] => *ch,
            [_, 0x90, 0x00] => return failed(status::NO_LOGICAL_CHANNELS, &[0x6A, 0x81]),
            other => return failed(status::NO_LOGICAL_CHANNELS, other),
        };
        let cla = crate::card::cla_for_channel(ch, false).unwrap_or(0);
        let mut select = vec![cla, 0xA4, 0x04, p2 as u8, aid.len() as u8];
        select.extend_from_slice(aid);
        select.push(0x00);
        let r = self.exchange(&select);
        if !r.ends_with(&[0x90, 0x00]) {
            card.transmit(&[0x00, 0x70, 0x80, ch]);
            return failed(status::SELECT_FAILED, &r);
        }
        self.channels.insert(ch, group);
        self.channels_changed();
        let info = InfoBuffer::new(16)
            .raw(&[0x90, 0x00, 0, 0])
            .u32(u32::from(ch))
            .uicc_bytes(&r[..r.len() - 2])
            .finish();
        (status::SUCCESS, info)
    }

    fn close_one(&mut self, ch: u8) -> [u8; 2] {
        self.channels.remove(&ch);
        let r = self.control.card().transmit(&[0x00, 0x70, 0x80, ch]);
        match r.as_slice() {
            [.., a, b] => [*a, *b],
            _ => [0x6F, 0x00],
        }
    }

    fn close_channel(&mut self, info: &[u8]) -> (u32, Vec<u8>) {
        let (Some(ch), Some(group)) = (message::u32_at(info, 0), message::u32_at(info, 4)) else {
            return (status::INVALID_PARAMETERS, Vec::new());
        };
        if !self.sync_presence() {
            return (status::SIM_NOT_INSERTED, Vec::new());
        }
        let mut sw = [0x90, 0x00];
        if ch != 0 {
            let Some(ch) = u8::try_from(ch)
                .ok()
                .filter(|c| self.channels.contains_key(c))
            else {
                return (status::INVALID_LOGICAL_CHANNEL, Vec::new());
            };
            sw = self.close_one(ch);
        } else {
            let of_group: Vec<u8> = self
                .channels
                .iter()
                .filter(|(_, g)| **g == group)
                .map(|(c, _)| *c)
                .collect();
            for c in of_group {
                sw = self.close_one(c);
            }
        }
        self.channels_changed();
        (status::SUCCESS, vec![sw[0], sw[1], 0, 0])
    }

    fn apdu(&mut self, info: &[u8]) -> (u32, Vec<u8>) {
        let (Some(ch), Some(class_type), Some(command)) = (
            message::u32_at(info, 0),
            message::u32_at(info, 8),
            message::uicc_bytes_at(info, 12),
        ) else {
            return (status::INVALID_PARAMETERS, Vec::new());
        };
        if command.len() < 4 || command.len() > 261 || class_type > 1 {
            return (status::INVALID_PARAMETERS, Vec::new());
        }
        if !self.sync_presence() {
            return (status::SIM_NOT_INSERTED, Vec::new());
        }
        let Some(ch) = u8::try_from(ch)
            .ok()
            .filter(|c| self.channels.contains_key(c))
        else {
            return (status::INVALID_LOGICAL_CHANNEL, Vec::new());
        };
        if self.busy() {
            return (status::BUSY, Vec::new());
        }
        // The modem rebuilds CLA from the class-byte type and the channel (MS spec); the
        // host's chaining bit is kept.
        let base = (command[0] & 0x10) | if class_type == 1 { 0x80 } else { 0x00 };
        let mut apdu = command.to_vec();
        apdu[0] = cla_on_channel(base, ch);
        let r = self.exchange(&apdu);
        let (data, sw) = match r.as_slice() {
            [data @ .., a, b] => (data, [*a, *b]),
            _ => (&[][..], [0x6F, 0x00]),
        };
        let info = InfoBuffer::new(12)
            .raw(&[sw[0], sw[1], 0, 0])
            .uicc_bytes(data)
            .finish();
        (status::SUCCESS, info)
    }
}

/// BASIC_CONNECT DEVICE_CAPS: a modem that does nothing but carry the SIM.
fn device_caps() -> Vec<u8> {
    InfoBuffer::new(64)
        .u32(1) // DeviceType: embedded
        .u32(1) // CellularClass: GSM
        .u32(1) // VoiceClass: no voice
        .u32(2) // SimClass: removable
        .u32(0) // DataClass
        .u32(0) // SmsCaps
        .u32(1) // ControlCaps: registration manual
        .u32(1) // MaxSessions
        .string("")
        .string("iotsafe-sim-0001")
        .string(env!("CARGO_PKG_VERSION"))
        .string("iotsafe-sim")
        .finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::modem::{ModemOptions, ModemStats, Shared};
    use crate::{CardOptions, SharedCard, default_profile};

    fn function(options: CardOptions) -> Function<SharedCard> {
        let card = SharedCard::from_profile(default_profile(), options);
        let control = ModemControl {
            shared: Arc::new(Shared {
                card,
                options: Mutex::new(ModemOptions::default()),
                stats: Mutex::new(ModemStats::default()),
                stop: AtomicBool::new(false),
            }),
        };
        let mut f = Function::new(control);
        f.opened = true;
        f
    }

    fn open(f: &mut Function<SharedCard>, group: u32) -> u32 {
        let aid = default_profile().aid;
        let mut request = Vec::new();
        for v in [aid.len() as u32, 16, 0, group] {
            request.extend_from_slice(&v.to_le_bytes());
        }
        request.extend_from_slice(&aid);
        while request.len() % 4 != 0 {
            request.push(0);
        }
        let (st, answer) = f.open_channel(&request);
        assert_eq!(st, status::SUCCESS);
        assert_eq!(&answer[..2], &[0x90, 0x00]);
        message::u32_at(&answer, 4).unwrap()
    }

    fn apdu(
        f: &mut Function<SharedCard>,
        channel: u32,
        class_type: u32,
        command: &[u8],
    ) -> (u32, Vec<u8>) {
        let mut request = Vec::new();
        for v in [channel, 0, class_type, command.len() as u32, 20] {
            request.extend_from_slice(&v.to_le_bytes());
        }
        request.extend_from_slice(command);
        while request.len() % 4 != 0 {
            request.push(0);
        }
        f.apdu(&request)
    }

    /// Channels 4 and up need the further-interindustry CLA (`4X`/`CX`): the modem builds it
    /// from the channel and the class-byte type, whatever CLA the host sent.
    #[test]
    fn cla_is_rebuilt_for_channels_above_three() {
        let mut f = function(CardOptions::default());
        let channels: Vec<u32> = (0..5).map(|_| open(&mut f, 1)).collect();
        assert_eq!(channels, vec![1, 2, 3, 4, 5]);
        for ch in channels {
            let (st, answer) = apdu(&mut f, ch, 1, &[0x00, 0xCB, 0x00, 0x00, 0x00]);
            assert_eq!(st, status::SUCCESS);
            assert_eq!(&answer[..2], &[0x90, 0x00], "channel {ch}");
        }
        // Closing by group frees all five.
        let mut close = Vec::new();
        close.extend_from_slice(&0u32.to_le_bytes());
        close.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(f.close_channel(&close).0, status::SUCCESS);
        assert_eq!(f.control.stats().open_sessions, 0);
    }

    /// A T=0 card answers `61xx`; the modem fetches the rest, so the host gets the whole
    /// answer with `90 00`.
    #[test]
    fn the_modem_chains_61xx() {
        let mut t0 = function(CardOptions {
            t0_style: true,
            ..CardOptions::default()
        });
        let mut plain = function(CardOptions::default());
        let (a, b) = (open(&mut t0, 1), open(&mut plain, 1));
        let get_data = [0x80, 0xCB, 0x00, 0x00, 0x00];
        let (st, chained) = apdu(&mut t0, a, 1, &get_data);
        let (_, direct) = apdu(&mut plain, b, 1, &get_data);
        assert_eq!(st, status::SUCCESS);
        assert_eq!(&chained[..2], &[0x90, 0x00]);
        assert_eq!(chained, direct);
        assert!(
            t0.control
                .card()
                .stats()
                .by_ins
                .get(&0xC0)
                .is_some_and(|n| *n >= 1)
        );
    }

    #[test]
    fn unknown_channel_and_absent_sim() {
        let mut f = function(CardOptions::default());
        let (st, _) = apdu(&mut f, 7, 0, &[0x00, 0xCB, 0x00, 0x00, 0x00]);
        assert_eq!(st, status::INVALID_LOGICAL_CHANNEL);
        let ch = open(&mut f, 1);
        f.control.card().remove();
        let (st, info) = apdu(&mut f, ch, 0, &[0x00, 0xCB, 0x00, 0x00, 0x00]);
        assert_eq!((st, info.len()), (status::SIM_NOT_INSERTED, 0));
        f.control.card().insert();
        // The power cycle closed the channel: the modem forgot it.
        let (st, _) = apdu(&mut f, ch, 0, &[0x00, 0xCB, 0x00, 0x00, 0x00]);
        assert_eq!(st, status::INVALID_LOGICAL_CHANNEL);
    }
}
