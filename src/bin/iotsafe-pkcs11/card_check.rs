//! Steps 4 to 6, per card (a PC/SC reader's or a modem's SIM): the connection, free logical
//! channels, the applet (AIDs tried, application information), the objects and key pairing,
//! and a test signature verified on this host.

use std::time::Instant;

use der::Decode;
use iotsafe_pkcs11::applet::objects::{FILE_USAGE_CERTIFICATE, HASH_SHA256};
use iotsafe_pkcs11::applet::{
    AppletError, CardObject, ConnectedCard, KeyPairs, ObjectClass, ObjectInfo, Readers,
    certificate_point, count_free_channels, pair_keys,
};
use iotsafe_pkcs11::transport::TransportError;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};

use crate::report::{Finding, Verdict};

/// What to do on a card.
pub struct CardCheck<'a> {
    pub readers: &'a Readers,
    /// The slot's name: the reader's, or the modem's slot description.
    pub endpoint: &'a str,
    pub is_modem: bool,
    pub signature: bool,
}

impl CardCheck<'_> {
    /// Runs the steps; true when the card is a token (the applet answered).
    pub fn run(&self, findings: &mut Vec<Finding>) -> bool {
        let subject = self.endpoint;
        if !self.census(findings) {
            return false;
        }
        let Some(card) = self.applet(findings) else {
            for check in ["objects", "key-pairing", "signature"] {
                findings.push(Finding::skip(check, subject, "no applet"));
            }
            return false;
        };
        let pairs = pair_keys(&card.contents.objects, &card.contents.proven_pairs);
        let signers = objects(subject, &card.contents.objects, findings);
        pairing(subject, &card.contents.objects, &pairs, findings);
        if !self.signature {
            findings.push(Finding::skip("signature", subject, "--no-signature"));
        } else if signers.is_empty() {
            findings.push(Finding::skip("signature", subject, "no key that signs"));
        }
        for key in signers.iter().filter(|_| self.signature) {
            findings.push(sign_and_verify(
                subject,
                &card,
                key,
                &pairs,
                &card.contents.objects,
            ));
        }
        card.link.close(false);
        true
    }

    /// Connects, and counts the free logical channels; false when there is no connection.
    fn census(&self, findings: &mut Vec<Finding>) -> bool {
        let subject = self.endpoint;
        let mut conn = match self.readers.connection(subject) {
            Ok(Some(conn)) => conn,
            Ok(None) if self.is_modem => {
                findings.push(Finding::fail(
                    "connection",
                    subject,
                    "no SIM",
                    "is a SIM inserted and enabled (`mmcli -m 0`, `AT+CPIN?`)? with ModemManager \
                     around, see modem-holders above",
                ));
                self.skip_rest(findings, "no SIM");
                return false;
            }
            Ok(None) => {
                // An empty reader is no fault by itself; the tokens step says whether any
                // card is left.
                findings.push(Finding::warn(
                    "connection",
                    subject,
                    "no card in this reader",
                    "insert the card if it belongs here; `pcsc_scan` shows what the reader sees",
                ));
                self.skip_rest(findings, "no card");
                return false;
            }
            Err(e) => {
                findings.push(connection_failure(subject, &e));
                self.skip_rest(findings, "no connection");
                return false;
            }
        };
        findings.push(Finding::ok("connection", subject, "connected to the card"));
        let aid = self
            .readers
            .settings()
            .aids
            .first()
            .cloned()
            .unwrap_or_default();
        let finding = match count_free_channels(conn.as_mut(), &aid) {
            Ok(c) if c.aid_refused => Finding::warn(
                "logical-channels",
                subject,
                format!(
                    "the modem opens a channel only by selecting an AID, and {} does not select",
                    hex::encode_upper(&aid)
                ),
                "see the applet step",
            ),
            Ok(c) if c.free == 0 => Finding::warn(
                "logical-channels",
                subject,
                "no free logical channel: other programs (or this module's processes, which \
                 share one) hold them all",
                "if the applet step fails: stop the programs that hold channels (another \
                 middleware, a stuck process), or set [applet] logical_channel = false when \
                 nothing else uses the SIM",
            ),
            Ok(c) => Finding::ok(
                "logical-channels",
                subject,
                format!(
                    "{} free logical channel(s){}",
                    c.free,
                    if c.transport_managed {
                        ", opened by the modem"
                    } else {
                        ", opened with MANAGE CHANNEL"
                    }
                ),
            ),
            Err(e) => Finding::warn(
                "logical-channels",
                subject,
                format!("counting failed: {e}"),
                "see the applet step",
            ),
        };
        findings.push(finding);
        conn.disconnect();
        true
    }

    fn skip_rest(&self, findings: &mut Vec<Finding>, why: &str) {
        for check in [
            "logical-channels",
            "applet",
            "objects",
            "key-pairing",
            "signature",
        ] {
            findings.push(Finding::skip(check, self.endpoint, why));
        }
    }

    /// Selects the applet and reads the card the way the module does (no content cache).
    fn applet(&self, findings: &mut Vec<Finding>) -> Option<ConnectedCard> {
        let subject = self.endpoint;
        let aids: Vec<String> = self
            .readers
            .settings()
            .aids
            .iter()
            .map(hex::encode_upper)
            .collect();
        let opened = self
            .readers
            .connection(subject)
            .map_err(AppletError::from)
            .and_then(|conn| match conn {
                Some(conn) => self.readers.open_applet(conn, subject),
                None => Ok(None),
            });
        match opened {
            Ok(Some(card)) => {
                let info = &card.contents.app_info;
                findings.push(Finding::ok(
                    "applet",
                    subject,
                    format!(
                        "IoT SAFE applet selected (AIDs tried: {}); version {}, identifier {}, \
                         {} session(s), functions {}{}",
                        aids.join(", "),
                        info.version.map_or("?".into(), |v| v.to_string()),
                        if info.identifier.is_empty() {
                            "(none)".into()
                        } else {
                            hex::encode_upper(&info.identifier)
                        },
                        info.max_sessions.map_or("?".into(), |v| v.to_string()),
                        info.functions.map_or("?".into(), |v| format!("{v:02X}")),
                        if card.writable {
                            "; takes STORE DATA writes"
                        } else {
                            ""
                        }
                    ),
                ));
                Some(card)
            }
            Ok(None) => {
                findings.push(Finding::fail(
                    "applet",
                    subject,
                    format!(
                        "no IoT SAFE applet answers (AIDs tried: {})",
                        aids.join(", ")
                    ),
                    "the SIM may not carry the applet (ask the SIM's vendor), or it has another \
                     AID: list it in [applet] aids",
                ));
                None
            }
            Err(AppletError::NoChannelFree) => {
                findings.push(Finding::fail(
                    "applet",
                    subject,
                    "no logical channel left to open the applet on",
                    "stop the programs that hold the SIM's channels (another middleware, a stuck \
                     process), or set [applet] logical_channel = false when nothing else uses \
                     the SIM",
                ));
                None
            }
            Err(e) => {
                findings.push(Finding::fail(
                    "applet",
                    subject,
                    format!("opening the applet failed: {e}"),
                    "run again with IOTSAFE_PKCS11_LOG=debug to see the APDUs",
                ));
                None
            }
        }
    }
}

fn connection_failure(subject: &str, e: &TransportError) -> Finding {
    match e {
        TransportError::PermissionDenied(why) => Finding::fail(
            "connection",
            subject,
            why.clone(),
            "see the permission findings above",
        ),
        TransportError::Timeout => Finding::fail(
            "connection",
            subject,
            "no answer in time",
            "a modem that stopped answering needs a power cycle",
        ),
        other => Finding::fail(
            "connection",
            subject,
            other.to_string(),
            "run again with IOTSAFE_PKCS11_LOG=debug",
        ),
    }
}

fn name_of(info: &ObjectInfo) -> String {
    let id = info.id.as_deref().map(hex::encode_upper);
    let label = info
        .label
        .as_deref()
        .map(|l| String::from_utf8_lossy(l).into_owned());
    match (id, label) {
        (Some(id), Some(label)) => format!("{id} \"{label}\""),
        (Some(id), None) => id,
        (None, Some(label)) => format!("\"{label}\""),
        (None, None) => "(unnamed)".into(),
    }
}

fn is_certificate(o: &CardObject) -> bool {
    o.info.class() == ObjectClass::File
        && o.info.file_usage == Some(FILE_USAGE_CERTIFICATE)
        && o.content.is_some()
}

/// The certificate file on the card whose key is `point`.
fn certificate_carrying<'o>(objects: &'o [CardObject], point: &[u8; 65]) -> Option<&'o CardObject> {
    objects
        .iter()
        .filter(|o| is_certificate(o))
        .find(|o| o.content.as_deref().and_then(certificate_point).as_ref() == Some(point))
}

/// Lists the objects; returns the private keys a signature can be made with.
fn objects(subject: &str, objects: &[CardObject], findings: &mut Vec<Finding>) -> Vec<ObjectInfo> {
    let count = |class: ObjectClass| objects.iter().filter(|o| o.info.class() == class).count();
    let privates: Vec<&CardObject> = objects
        .iter()
        .filter(|o| o.info.class() == ObjectClass::PrivateKey)
        .collect();
    let usable: Vec<ObjectInfo> = privates
        .iter()
        .filter(|o| o.info.is_active() && o.info.is_p256())
        .map(|o| o.info.clone())
        .collect();
    let signers: Vec<ObjectInfo> = usable.iter().filter(|i| i.can_sign()).cloned().collect();
    let detail = format!(
        "{} private key(s) ({} active P-256, {} that sign: {}), {} public key(s), {} \
         certificate(s), {} other file(s), {} secret key(s)",
        privates.len(),
        usable.len(),
        signers.len(),
        signers.iter().map(name_of).collect::<Vec<_>>().join(", "),
        count(ObjectClass::PublicKey),
        objects.iter().filter(|o| is_certificate(o)).count(),
        objects
            .iter()
            .filter(|o| o.info.class() == ObjectClass::File && !is_certificate(o))
            .count(),
        count(ObjectClass::SecretKey),
    );
    findings.push(if usable.is_empty() {
        Finding::fail(
            "objects",
            subject,
            detail,
            "the applet holds no usable key: generate one (`pkcs11-tool --keypairgen --key-type \
             EC:prime256v1 --id <id>` into an empty container) or have the SIM's vendor \
             provision it",
        )
    } else {
        Finding::ok("objects", subject, detail)
    });
    signers
}

/// Every usable private key's public half, and the certificate that carries it.
fn pairing(subject: &str, objects: &[CardObject], pairs: &KeyPairs, findings: &mut Vec<Finding>) {
    let keys = objects
        .iter()
        .filter(|o| o.info.class() == ObjectClass::PrivateKey && o.info.is_active())
        .filter(|o| o.info.is_p256());
    for key in keys {
        let key_subject = format!("{subject}, key {}", name_of(&key.info));
        let Some(point) = pairs.point_of(&key.info) else {
            findings.push(Finding::warn(
                "key-pairing",
                key_subject,
                "no public key or certificate is known to belong to this key: consumers that \
                 look for its public key or certificate (TLS clients) do not find them",
                "store its public key or certificate under the same ID or label",
            ));
            continue;
        };
        findings.push(match certificate_carrying(objects, &point) {
            Some(cert) => Finding::ok(
                "key-pairing",
                key_subject,
                format!(
                    "certificate {} ({}) carries its public key",
                    name_of(&cert.info),
                    cert.content
                        .as_deref()
                        .and_then(certificate_subject)
                        .unwrap_or_else(|| "subject unreadable".into())
                ),
            ),
            None if key.info.can_sign() => Finding::warn(
                "key-pairing",
                key_subject,
                "its public key is known, but no certificate carries it: TLS client \
                 authentication needs one",
                "store the certificate (e.g. `pkcs11-tool --write-object cert.der --type cert \
                 --id <the key's id>`)",
            ),
            None => Finding::ok("key-pairing", key_subject, "its public key is known"),
        });
    }
}

fn certificate_subject(der_bytes: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der_bytes).ok()?;
    Some(cert.tbs_certificate().subject().to_string())
}

/// Signs a fresh SHA-256 digest with `key` on the card and verifies it here with the key's
/// public half.
fn sign_and_verify(
    subject: &str,
    card: &ConnectedCard,
    key: &ObjectInfo,
    pairs: &KeyPairs,
    objects: &[CardObject],
) -> Finding {
    let key_subject = format!("{subject}, key {}", name_of(key));
    let mut challenge = [0u8; 32];
    if rustix::rand::getrandom(&mut challenge, rustix::rand::GetRandomFlags::empty()).is_err() {
        challenge = Sha256::digest(format!("{:?}", Instant::now())).into();
    }
    let digest: [u8; 32] = Sha256::digest(challenge).into();
    let started = Instant::now();
    let signed = card
        .link
        .lease()
        .run(&mut |ch| ch.sign_hash(key, HASH_SHA256, &digest));
    let took = started.elapsed();
    let signature = match signed {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                "signature",
                key_subject,
                format!("the card did not sign: {e}"),
                "run again with IOTSAFE_PKCS11_LOG=debug to see the APDUs",
            );
        }
    };
    let Some(point) = pairs.point_of(key) else {
        return Finding::new("signature", key_subject, Verdict::Warn)
            .detail(format!(
                "the card signed in {} ms, but with no known public half it cannot be verified",
                took.as_millis()
            ))
            .fix("see key-pairing");
    };
    let verified = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .ok()
        .zip(p256::ecdsa::Signature::from_slice(&signature).ok())
        .is_some_and(|(key, sig)| key.verify_prehash(&digest, &sig).is_ok());
    let against = match certificate_carrying(objects, &point) {
        Some(_) => "its certificate's public key",
        None => "its public key",
    };
    if verified {
        Finding::ok(
            "signature",
            key_subject,
            format!(
                "ECDSA P-256 over SHA-256 made on the card in {} ms and verified on this host \
                 with {against}",
                took.as_millis()
            ),
        )
    } else {
        Finding::fail(
            "signature",
            key_subject,
            format!("the card's signature does not verify with {against}"),
            "the key and its public half do not match (a wrong certificate was stored for \
             this key, or the card misbehaves): re-provision the certificate for this key",
        )
    }
}
