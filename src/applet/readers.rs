//! The card endpoints of the configuration (PC/SC readers, modems) and connecting to the applet
//! on one of them: the link, the first card read and the provisioning probe, in one
//! transaction.

use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};

use super::GSMA_AID;
use super::apdu::ClassStyle;
use super::attach::attach;
use super::card_link::CardLink;
use super::card_read::CardContents;
use super::content_cache::ContentCache;
use super::error::Result;
use crate::config::{
    AtMode as ConfigAtMode, CommandClass, Config, ModemConfig, ModemProtocol, Provisioning,
};
use crate::transport::at::{AtMode, ModemSettings};
use crate::transport::{
    CardConnection, ConfiguredReaders, ControlSettings, ModemEndpoint, ModemLink, ReaderFilter,
    ReaderSource, TransportError, reader_source_override,
};

/// How to find and talk to the applet on a card.
#[derive(Debug, Clone)]
pub struct AppletSettings {
    /// AIDs to try, in order.
    pub aids: Vec<Vec<u8>>,
    pub style: ClassStyle,
    /// Use a logical channel (MANAGE CHANNEL / AT+CCHO); `false` forces the basic channel.
    pub logical_channel: bool,
    pub provisioning: Provisioning,
}

impl AppletSettings {
    pub fn from_config(config: &Config) -> AppletSettings {
        let mut aids = config.aids();
        if aids.is_empty() {
            aids.push(GSMA_AID.to_vec());
        }
        AppletSettings {
            aids,
            style: match config.applet.cla {
                CommandClass::InterIndustry => ClassStyle::InterIndustry,
                CommandClass::Proprietary => ClassStyle::Proprietary,
            },
            logical_channel: config.applet.logical_channel,
            provisioning: config.applet.provisioning,
        }
    }
}

/// A card with the applet selected and read.
pub struct ConnectedCard {
    pub link: CardLink,
    pub contents: CardContents,
    /// The card takes writes through the STORE DATA provisioning profile.
    pub writable: bool,
    /// Who made the reader or modem, when it says (a modem's `AT+CGMI`).
    pub manufacturer: Option<String>,
}

impl ConnectedCard {
    /// Opens (or reuses) the applet's channel on `conn` and learns everything the object cache
    /// needs, from the card or from the content cache. `Ok(None)` when the card has no IoT
    /// SAFE applet.
    pub fn open(
        conn: Box<dyn CardConnection>,
        settings: &AppletSettings,
        cache: &Arc<ContentCache>,
        reader: &str,
    ) -> Result<Option<ConnectedCard>> {
        let manufacturer = conn.manufacturer();
        let Some(attached) = attach(conn, settings, cache, reader)? else {
            return Ok(None);
        };
        Ok(Some(ConnectedCard {
            link: CardLink::new(attached.link, settings.style, reader),
            contents: attached.contents,
            writable: attached.writable,
            manufacturer,
        }))
    }
}

/// Where slots come from: the configured PC/SC readers and modems (or a test's source).
pub struct Readers {
    source: Arc<dyn ReaderSource>,
    settings: AppletSettings,
    cache: Arc<ContentCache>,
}

impl Readers {
    pub fn from_config(config: &Config) -> Readers {
        let source = reader_source_override().unwrap_or_else(|| {
            let pcsc = config.pcsc.enabled.then(|| ReaderFilter {
                include: config.pcsc.readers.clone(),
                exclude: config.pcsc.exclude_readers.clone(),
            });
            let modems = config
                .modem
                .iter()
                .map(|m| modem_endpoint(m, config.lock_dir.clone()))
                .collect();
            Arc::new(ConfiguredReaders::new(
                pcsc,
                modems,
                config.lock_dir.clone(),
            ))
        });
        if config.applet.max_channels > 1 {
            warn!(
                "applet.max_channels = {} is ignored: a process uses one logical channel per card \
                 (see docs/configuration.md)",
                config.applet.max_channels
            );
        }
        Readers {
            source,
            settings: AppletSettings::from_config(config),
            cache: Arc::new(ContentCache::new(config.cache, config.cache_dir.as_deref())),
        }
    }

    /// Names of the endpoints currently known.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.source.reader_names()?)
    }

    /// Whether a card seems present in `reader`, without sending an APDU.
    pub fn card_present(&self, reader: &str) -> bool {
        self.source.card_present(reader)
    }

    /// Whether `reader` is a modem (else a PC/SC reader).
    pub fn is_modem(&self, reader: &str) -> bool {
        self.source.is_modem(reader)
    }

    /// Connects to the applet on the card in `reader`. `Ok(None)`: no card there, or no
    /// applet on it. A device this user may not open is an error (its message says why);
    /// other failures to connect are logged and count as no card.
    pub fn connect(&self, reader: &str) -> Result<Option<ConnectedCard>> {
        let conn = match self.connection(reader) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e @ TransportError::PermissionDenied(_)) => return Err(e.into()),
            Err(e) => {
                debug!("{reader}: connect: {e}");
                return Ok(None);
            }
        };
        self.open_applet(conn, reader)
    }

    /// The bare connection to the card in `reader`, with the transport's reason when there
    /// is none (`Ok(None)`: no card or no modem there).
    pub fn connection(
        &self,
        reader: &str,
    ) -> std::result::Result<Option<Box<dyn CardConnection>>, TransportError> {
        self.source.connect(reader)
    }

    /// Opens the applet on `conn` (see [`ConnectedCard::open`]).
    pub fn open_applet(
        &self,
        conn: Box<dyn CardConnection>,
        reader: &str,
    ) -> Result<Option<ConnectedCard>> {
        ConnectedCard::open(conn, &self.settings, &self.cache, reader)
    }

    /// How the applet is found and addressed.
    pub fn settings(&self) -> &AppletSettings {
        &self.settings
    }
}

/// How the modem `modem` of the configuration is reached (`lock_dir`: the configuration's).
pub fn modem_endpoint(modem: &ModemConfig, lock_dir: Option<std::path::PathBuf>) -> ModemEndpoint {
    let timeout = Duration::from_millis(modem.timeout_ms);
    let control = |default_proxy: &str| ControlSettings {
        device: modem.device.clone(),
        proxy_socket: match modem.proxy {
            Some(false) => None,
            _ => Some(
                modem
                    .proxy_socket
                    .clone()
                    .unwrap_or_else(|| default_proxy.to_string()),
            ),
        },
        sim_slot: modem.sim_slot,
        timeout,
        lock_dir: lock_dir.clone(),
    };
    let link = match modem.protocol {
        ModemProtocol::At => ModemLink::At(ModemSettings {
            device: modem.device.clone(),
            baud: modem.baud,
            at_mode: match modem.at_mode {
                ConfigAtMode::Auto => AtMode::Auto,
                ConfigAtMode::Cgla => AtMode::Cgla,
                ConfigAtMode::Csim => AtMode::Csim,
            },
            max_command_len: modem.max_command_len,
            timeout,
            lock_dir: lock_dir.clone(),
            setup_commands: modem.setup_commands.clone(),
        }),
        ModemProtocol::Mbim => ModemLink::Mbim(control("mbim-proxy")),
        ModemProtocol::Qmi => ModemLink::Qmi(control("qmi-proxy")),
    };
    ModemEndpoint {
        name: modem.slot_name(),
        link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_config() {
        let c = Config::parse(
            "[applet]\naids = [\"A0000005590010\", \"A000000030 53F124 01770101 495341\"]\ncla = \"proprietary\"",
            "test",
        )
        .unwrap();
        let s = AppletSettings::from_config(&c);
        assert_eq!(s.aids.len(), 2);
        assert_eq!(s.style, ClassStyle::Proprietary);
        let none = AppletSettings::from_config(&Config::parse("", "t").unwrap());
        assert_eq!(none.aids, vec![GSMA_AID.to_vec()]);
        assert_eq!(none.style, ClassStyle::InterIndustry);
    }

    #[test]
    fn reader_filter_from_config() {
        let filter = ReaderFilter {
            include: vec!["Virtual PCD".into()],
            exclude: vec!["01".into()],
        };
        assert!(filter.selects("Virtual PCD 00 00"));
        assert!(!filter.selects("Virtual PCD 00 01"));
        assert!(!filter.selects("Other"));
    }
}
