//! The checks in the order a missing token is best explained: configuration, pcscd, each
//! modem, then each card found (applet, objects, key pairing, test signature).

use std::path::PathBuf;

use iotsafe_pkcs11::applet::Readers;

use crate::card_check::CardCheck;
use crate::report::{Finding, Report};
use crate::{config_check, modem_check, pcscd_check, system};

pub struct Options {
    /// The configuration file to check instead of the module's default.
    pub config: Option<PathBuf>,
    /// Make a test signature with every key that signs.
    pub signature: bool,
}

pub fn run(options: &Options) -> Report {
    let mut findings = Vec::new();
    let (config, finding) = config_check::check(options.config.as_deref());
    findings.push(finding);
    let Some(mut config) = config else {
        findings.push(Finding::skip(
            "pcscd",
            "PC/SC",
            "the configuration cannot be used",
        ));
        return Report::new(system::runner(), findings);
    };
    // The doctor reads the card itself, never what an earlier process kept.
    config.cache = false;

    let (pcscd_findings, pcsc_readers) = pcscd_check::check(&config);
    findings.extend(pcscd_findings);

    let readers = Readers::from_config(&config);
    let mut cards: Vec<(String, bool)> = Vec::new();
    for modem in &config.modem {
        let (modem_findings, reachable) = modem_check::check(&config, modem);
        findings.extend(modem_findings);
        if reachable {
            cards.push((modem.slot_name(), true));
        }
    }
    if config.modem.is_empty() {
        findings.push(Finding::skip(
            "modem-port",
            "modems",
            "no [[modem]] in the configuration",
        ));
    }
    cards.extend(pcsc_readers.into_iter().map(|r| (r, false)));
    let mut tokens = Vec::new();
    for (endpoint, is_modem) in &cards {
        let check = CardCheck {
            readers: &readers,
            endpoint,
            is_modem: *is_modem,
            signature: options.signature,
        };
        if check.run(&mut findings) {
            tokens.push(endpoint.clone());
        }
    }
    findings.push(if tokens.is_empty() {
        Finding::fail(
            "tokens",
            "all slots",
            "no slot has a token: applications see no IoT SAFE key",
            "fix the first failure above",
        )
    } else {
        Finding::ok(
            "tokens",
            "all slots",
            format!(
                "{} slot(s) with a token: {}",
                tokens.len(),
                tokens.join(", ")
            ),
        )
    });
    Report::new(system::runner(), findings)
}
