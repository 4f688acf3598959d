//! The reading commands of the applet and of channel management: SELECT, MANAGE CHANNEL,
//! GET DATA (application information, object list), READ PUBLIC KEY, READ FILE, GET RANDOM.

use super::apdu::{ClassStyle, Ins, Trace};
use super::channel::{AppletChannel, ok_data};
use super::error::{AppletError, Result};
use super::formats::parse_public_key;
use super::info::AppInfo;
use super::objects::{self, ObjectInfo};
use super::status::StatusWord;
use crate::transport::Transmit;

impl AppletChannel<'_> {
    /// SELECT by AID, always in the inter-industry class (ISO 7816-4 defines it there; cards
    /// reject `8x A4`). `Ok(false)` when the card does not have that applet.
    pub fn select(&mut self, aid: &[u8]) -> Result<bool> {
        let resp = self.in_class(ClassStyle::InterIndustry, |ch| {
            ch.exchange(Ins::Select, 0x04, 0x00, aid, None, Trace::Full)
        })?;
        match resp.sw {
            StatusWord::OK => Ok(true),
            // "Not here" in the ways cards say it.
            StatusWord(0x6A82 | 0x6A81 | 0x6A86 | 0x6999 | 0x6985 | 0x6D00 | 0x6E00) => Ok(false),
            sw => Err(AppletError::Status {
                command: "SELECT",
                sw,
            }),
        }
    }

    /// GET DATA application information.
    pub fn application_info(&mut self) -> Result<AppInfo> {
        let data = self.exchange_ok(
            Ins::GetData,
            0x00,
            0x00,
            &[],
            Some(0x00),
            "GET DATA (application)",
        )?;
        Ok(AppInfo::parse(&data))
    }

    /// GET DATA object list, following `6300` continuation pages.
    pub fn object_list(&mut self) -> Result<Vec<ObjectInfo>> {
        let mut data = Vec::new();
        let mut p2 = 0x00;
        for _ in 0..64 {
            let mut resp = self.exchange(Ins::GetData, 0x01, p2, &[], Some(0x00), Trace::Full)?;
            data.append(&mut resp.data);
            match resp.sw {
                StatusWord::OK => {
                    return objects::parse_object_list(&data)
                        .map_err(|e| AppletError::Malformed(format!("object list: {}", e.0)));
                }
                StatusWord::MORE_DATA => p2 = 0x01,
                sw => {
                    return Err(AppletError::Status {
                        command: "GET DATA (object list)",
                        sw,
                    });
                }
            }
        }
        Err(AppletError::Malformed("object list never ends".into()))
    }

    /// READ PUBLIC KEY: the uncompressed point `04 X Y`.
    pub fn read_public_key(&mut self, key: &ObjectInfo) -> Result<[u8; 65]> {
        let data = self.exchange_ok(
            Ins::ReadPublicKey,
            0x00,
            0x00,
            &key.reference(),
            Some(0x00),
            "READ PUBLIC KEY",
        )?;
        parse_public_key(&data)
            .ok_or_else(|| AppletError::Malformed("READ PUBLIC KEY: not a P-256 point".into()))
    }

    /// READ FILE in chunks of up to 256 bytes until `size` bytes are read or the card ends.
    pub fn read_file(&mut self, file: &ObjectInfo) -> Result<Vec<u8>> {
        let size = file.file_size.map(usize::from);
        let reference = file.reference();
        let mut content = Vec::new();
        loop {
            if size.is_some_and(|s| content.len() >= s) || content.len() > 0xFFFF {
                break;
            }
            let offset = content.len() as u16;
            let [hi, lo] = offset.to_be_bytes();
            let resp = self.exchange(Ins::ReadFile, hi, lo, &reference, Some(0x00), Trace::Full)?;
            if !resp.is_ok() {
                // Some cards answer "offset out of range" exactly at the end of the file.
                if size.is_none()
                    && !content.is_empty()
                    && matches!(resp.sw.0, 0x6A86 | 0x6981 | 0x6B00)
                {
                    break;
                }
                return Err(AppletError::Status {
                    command: "READ FILE",
                    sw: resp.sw,
                });
            }
            if resp.data.is_empty() {
                break;
            }
            let got = resp.data.len();
            content.extend_from_slice(&resp.data);
            if size.is_none() && got < 256 {
                break;
            }
        }
        if let Some(s) = size {
            content.truncate(s);
        }
        Ok(content)
    }

    /// GET RANDOM, at most 256 bytes per command.
    pub fn get_random(&mut self, out: &mut [u8]) -> Result<()> {
        for chunk in out.chunks_mut(256) {
            let le = if chunk.len() == 256 {
                0x00
            } else {
                chunk.len() as u8
            };
            let resp = self.exchange(Ins::GetRandom, 0x00, 0x00, &[], Some(le), Trace::Redacted)?;
            let data = ok_data(resp, "GET RANDOM")?;
            if data.len() < chunk.len() {
                return Err(AppletError::Malformed(
                    "GET RANDOM returned too few bytes".into(),
                ));
            }
            chunk.copy_from_slice(&data[..chunk.len()]);
        }
        Ok(())
    }
}

/// MANAGE CHANNEL open on the basic channel. `Ok(None)` when the card refuses it (it has no
/// logical channels); [`AppletError::NoChannelFree`] when it has none left (`6A81`).
pub fn open_channel(pipe: &mut dyn Transmit) -> Result<Option<u8>> {
    let mut basic = AppletChannel::new(pipe, 0, ClassStyle::InterIndustry);
    let resp = basic.exchange(Ins::ManageChannel, 0x00, 0x00, &[], Some(0x01), Trace::Full)?;
    match (resp.sw, resp.data.as_slice()) {
        (StatusWord::OK, [ch]) if (1..=19).contains(ch) => Ok(Some(*ch)),
        (StatusWord(0x6A81), _) => Err(AppletError::NoChannelFree),
        _ => Ok(None),
    }
}

/// MANAGE CHANNEL close, sent on the basic channel.
pub fn close_channel(pipe: &mut dyn Transmit, channel: u8) -> Result<()> {
    let mut basic = AppletChannel::new(pipe, 0, ClassStyle::InterIndustry);
    basic.exchange(Ins::ManageChannel, 0x80, channel, &[], None, Trace::Full)?;
    Ok(())
}
