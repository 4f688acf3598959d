//! The default profile and its test PKI (CA, client and server certificates).
//!
//! Everything is derived deterministically from a seed, so `default_profile()` is the
//! same on every run and machine (a *test* card: the keys are public knowledge).

use std::str::FromStr;
use std::sync::OnceLock;

use der::asn1::{Ia5String, OctetString, UtcTime};
use der::{DateTime, EncodePem, pem::LineEnding};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePrivateKey;
use sha2::{Digest, Sha256};
use spki::{EncodePublicKey, SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::builder::{Builder, CertificateBuilder, profile::BuilderProfile};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use crate::profile::*;

/// Seed of [`default_bundle`].
pub const DEFAULT_SEED: &[u8] = b"iotsafe-sim default profile v1";

/// The default profile plus the PEM files `init-profile` writes next to it.
#[derive(Debug, Clone)]
pub struct DefaultBundle {
    /// The card profile.
    pub profile: Profile,
    /// Test CA certificate (PEM).
    pub ca_cert_pem: String,
    /// Test CA private key (PKCS#8 PEM).
    pub ca_key_pem: String,
    /// Client certificate (PEM), also stored in file `02`.
    pub client_cert_pem: String,
    /// Client private key (PKCS#8 PEM), also private key `01` of the card.
    pub client_key_pem: String,
    /// Server certificate for `localhost` (PEM).
    pub server_cert_pem: String,
    /// Server private key (PKCS#8 PEM).
    pub server_key_pem: String,
}

/// Error creating the PKI.
#[derive(Debug)]
pub struct PkiError(pub String);

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PKI generation failed: {}", self.0)
    }
}

impl std::error::Error for PkiError {}

fn e<E: std::fmt::Display>(x: E) -> PkiError {
    PkiError(x.to_string())
}

/// The default bundle (cached; cloned on each call).
pub fn default_bundle() -> DefaultBundle {
    static CACHE: OnceLock<DefaultBundle> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            // The default seed is known to work, so this cannot fail in practice; fall back
            // to an object-less profile rather than panicking.
            bundle_from_seed(DEFAULT_SEED).unwrap_or_else(|_| DefaultBundle {
                profile: Profile::default(),
                ca_cert_pem: String::new(),
                ca_key_pem: String::new(),
                client_cert_pem: String::new(),
                client_key_pem: String::new(),
                server_cert_pem: String::new(),
                server_key_pem: String::new(),
            })
        })
        .clone()
}

/// The default profile (see the crate README for its objects).
pub fn default_profile() -> Profile {
    default_bundle().profile
}

/// The default profile with the provisioning profile (STORE DATA) switched on.
pub fn default_profile_with_provisioning() -> Profile {
    default_profile().with_provisioning(true)
}

/// Derives a P-256 key deterministically from `seed` and `name`.
pub fn derive_key(seed: &[u8], name: &str) -> p256::SecretKey {
    let mut ctr: u32 = 0;
    loop {
        let mut h = Sha256::new();
        h.update(b"iotsafe-sim key derivation\0");
        h.update((seed.len() as u32).to_be_bytes());
        h.update(seed);
        h.update(name.as_bytes());
        h.update(ctr.to_be_bytes());
        let d = h.finalize();
        if let Ok(k) = p256::SecretKey::from_slice(&d) {
            return k;
        }
        ctr = ctr.wrapping_add(1);
    }
}

/// Derives `len` secret bytes deterministically from `seed` and `name`:
/// `T(i) = SHA-256("iotsafe-sim secret derivation\0" ‖ u32be(len(seed)) ‖ seed ‖ name ‖
/// u32be(i))` for `i = 0, 1, …`, concatenated and truncated to `len`.
pub fn derive_secret(seed: &[u8], name: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut ctr: u32 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(b"iotsafe-sim secret derivation\0");
        h.update((seed.len() as u32).to_be_bytes());
        h.update(seed);
        h.update(name.as_bytes());
        h.update(ctr.to_be_bytes());
        out.extend_from_slice(&h.finalize());
        ctr = ctr.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// The pre-shared keys of the default profile: `(ID, label = PSK identity, length in
/// bytes, key-derivation algorithms (tag 94))`. The value of each is
/// [`derive_secret`]`(seed, "psk-<ID as 2 lowercase hex digits>", length)`, e.g.
/// `derive_secret(DEFAULT_SEED, "psk-10", 32)`; see also [`default_psk`].
pub const DEFAULT_PSKS: [(u8, &str, usize, u8); 4] = [
    (0x10, "device-psk", 32, 0x03),
    (0x11, "urn:imei:359000000000001", 16, 0x01),
    (0x12, "tls13-psk", 48, 0x02),
    (0x13, "psk-64", 64, 0x03),
];

/// The value of default PSK `id` for `seed` (`None` for an ID not in [`DEFAULT_PSKS`]).
pub fn psk_from_seed(seed: &[u8], id: u8) -> Option<Vec<u8>> {
    DEFAULT_PSKS
        .iter()
        .find(|p| p.0 == id)
        .map(|p| derive_secret(seed, &format!("psk-{id:02x}"), p.2))
}

/// The value of default PSK `id` in [`default_profile`] (`10`, `11`, `12`, `13`).
pub fn default_psk(id: u8) -> Option<Vec<u8>> {
    psk_from_seed(DEFAULT_SEED, id)
}

fn serial(seed: &[u8], name: &str) -> Result<SerialNumber, PkiError> {
    let mut h = Sha256::new();
    h.update(b"iotsafe-sim serial\0");
    h.update(seed);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = d[..16].to_vec();
    b[0] = (b[0] & 0x7F) | 0x10; // positive, no leading zero
    SerialNumber::new(&b).map_err(e)
}

fn validity() -> Result<Validity, PkiError> {
    let nb = UtcTime::from_date_time(DateTime::new(2020, 1, 1, 0, 0, 0).map_err(e)?).map_err(e)?;
    let na =
        UtcTime::from_date_time(DateTime::new(2049, 12, 31, 23, 59, 59).map_err(e)?).map_err(e)?;
    Ok(Validity::new(Time::UtcTime(nb), Time::UtcTime(na)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ca,
    Client,
    Server,
}

struct CertProfile {
    subject: Name,
    issuer: Name,
    kind: Kind,
}

impl BuilderProfile for CertProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut ext: Vec<Extension> = Vec::new();
        let subj = tbs.subject();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier::try_from(issuer_spk)?;
        match self.kind {
            Kind::Ca => {
                ext.push(
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    }
                    .to_extension(subj, &ext)?,
                );
                ext.push(
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                        .to_extension(subj, &ext)?,
                );
                ext.push(ski.to_extension(subj, &ext)?);
            }
            Kind::Client | Kind::Server => {
                ext.push(
                    BasicConstraints {
                        ca: false,
                        path_len_constraint: None,
                    }
                    .to_extension(subj, &ext)?,
                );
                ext.push(KeyUsage(KeyUsages::DigitalSignature.into()).to_extension(subj, &ext)?);
                let eku = if self.kind == Kind::Client {
                    const_oid::db::rfc5280::ID_KP_CLIENT_AUTH
                } else {
                    const_oid::db::rfc5280::ID_KP_SERVER_AUTH
                };
                ext.push(ExtendedKeyUsage(vec![eku]).to_extension(subj, &ext)?);
                if self.kind == Kind::Server {
                    let san = SubjectAltName(vec![
                        GeneralName::DnsName(Ia5String::new("localhost")?),
                        GeneralName::IpAddress(OctetString::new(vec![127, 0, 0, 1])?),
                    ]);
                    ext.push(san.to_extension(subj, &ext)?);
                }
                ext.push(ski.to_extension(subj, &ext)?);
                ext.push(aki.to_extension(subj, &ext)?);
            }
        }
        Ok(ext)
    }
}

fn issue(
    kind: Kind,
    subject: &str,
    issuer: &str,
    serial: SerialNumber,
    subject_key: &p256::SecretKey,
    issuer_key: &p256::SecretKey,
) -> Result<String, PkiError> {
    let profile = CertProfile {
        subject: Name::from_str(subject).map_err(e)?,
        issuer: Name::from_str(issuer).map_err(e)?,
        kind,
    };
    let spki_der = subject_key.public_key().to_public_key_der().map_err(e)?;
    let spki = SubjectPublicKeyInfo::try_from(spki_der.as_bytes()).map_err(e)?;
    let builder = CertificateBuilder::new(profile, serial, validity()?, spki).map_err(e)?;
    let signer = SigningKey::from(issuer_key);
    let cert = builder.build::<_, DerSignature>(&signer).map_err(e)?;
    cert.to_pem(LineEnding::LF).map_err(e)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_label, der) = der::pem::decode_vec(pem.as_bytes()).map_err(e)?;
    Ok(der)
}

fn key_pem(k: &p256::SecretKey) -> Result<String, PkiError> {
    Ok(k.to_pkcs8_pem(LineEnding::LF).map_err(e)?.to_string())
}

/// Creates the default profile and PKI from `seed`.
pub fn bundle_from_seed(seed: &[u8]) -> Result<DefaultBundle, PkiError> {
    const CA_DN: &str = "CN=iotsafe-pkcs11 Test CA";
    let ca_key = derive_key(seed, "ca");
    let client_key = derive_key(seed, "client");
    let server_key = derive_key(seed, "server");
    let ecdh_key = derive_key(seed, "ecdh");

    let ca_pem = issue(
        Kind::Ca,
        CA_DN,
        CA_DN,
        serial(seed, "ca")?,
        &ca_key,
        &ca_key,
    )?;
    let client_pem = issue(
        Kind::Client,
        "CN=iotsafe-device,O=iotsafe-pkcs11 test",
        CA_DN,
        serial(seed, "client")?,
        &client_key,
        &ca_key,
    )?;
    let server_pem = issue(
        Kind::Server,
        "CN=localhost",
        CA_DN,
        serial(seed, "server")?,
        &server_key,
        &ca_key,
    )?;

    let point = |k: &p256::SecretKey| {
        use p256::elliptic_curve::sec1::ToSec1Point;
        k.public_key().to_sec1_point(false).as_bytes().to_vec()
    };

    let profile = Profile {
        private_keys: vec![
            PrivateKey {
                id: vec![0x01],
                label: Some(b"client".to_vec()),
                key_type: KEY_TYPE_P256_PERSISTENT,
                state: ObjectState::Activated,
                access: ACCESS_UPDATE,
                usage: 0x01,
                crypto_functions: CF_SIGNATURE | CF_KEY_AGREEMENT,
                signature_algos: SIG_ECDSA,
                hash_algos: 0x0007,
                key_agreement_algos: KA_ECKA,
                private: Some(client_key.to_bytes().to_vec()),
            },
            PrivateKey {
                id: vec![0x04],
                label: Some(b"ecdh".to_vec()),
                key_type: KEY_TYPE_P256_VOLATILE,
                state: ObjectState::Activated,
                access: ACCESS_UPDATE,
                usage: 0x01,
                crypto_functions: CF_KEY_GENERATION | CF_KEY_AGREEMENT,
                signature_algos: 0x00,
                hash_algos: 0x0000,
                key_agreement_algos: KA_ECKA,
                private: Some(ecdh_key.to_bytes().to_vec()),
            },
        ],
        public_keys: vec![
            PublicKey {
                id: vec![0x01],
                label: Some(b"client".to_vec()),
                key_type: KEY_TYPE_P256_PERSISTENT,
                state: ObjectState::Activated,
                access: ACCESS_READ,
                usage: 0x01,
                crypto_functions: CF_SIGNATURE | CF_KEY_AGREEMENT,
                signature_algos: SIG_ECDSA,
                hash_algos: 0x0007,
                key_agreement_algos: KA_ECKA,
                point: Some(point(&client_key)),
            },
            PublicKey {
                id: vec![0x04],
                label: Some(b"ecdh".to_vec()),
                key_type: KEY_TYPE_P256_VOLATILE,
                state: ObjectState::Activated,
                access: ACCESS_READ,
                usage: 0x01,
                crypto_functions: CF_KEY_GENERATION | CF_KEY_AGREEMENT,
                signature_algos: 0x00,
                hash_algos: 0x0000,
                key_agreement_algos: KA_ECKA,
                point: Some(point(&ecdh_key)),
            },
            PublicKey {
                id: vec![0x05],
                label: Some(b"peer".to_vec()),
                key_type: KEY_TYPE_P256_PERSISTENT,
                state: ObjectState::Deactivated,
                access: ACCESS_READ | ACCESS_UPDATE,
                usage: 0x01,
                crypto_functions: CF_SIGNATURE | CF_KEY_AGREEMENT,
                signature_algos: SIG_ECDSA,
                hash_algos: 0x0007,
                key_agreement_algos: KA_ECKA,
                point: None,
            },
        ],
        files: vec![
            File {
                id: vec![0x02],
                label: Some(b"client".to_vec()),
                usage: FILE_USAGE_CERTIFICATE,
                state: ObjectState::Activated,
                access: ACCESS_READ,
                content: pem_to_der(&client_pem)?,
            },
            File {
                id: vec![0x03],
                label: Some(b"ca".to_vec()),
                usage: FILE_USAGE_CERTIFICATE,
                state: ObjectState::Activated,
                access: ACCESS_READ,
                content: pem_to_der(&ca_pem)?,
            },
        ],
        secret_keys: DEFAULT_PSKS
            .iter()
            .map(|&(id, label, _, kd)| SecretKey {
                id: vec![id],
                label: Some(label.as_bytes().to_vec()),
                key_type: KEY_TYPE_SECRET_HMAC,
                state: ObjectState::Activated,
                access: ACCESS_READ | ACCESS_UPDATE,
                crypto_functions: CF_KEY_DERIVATION,
                key_derivation_algos: kd,
                value: psk_from_seed(seed, id),
            })
            .collect(),
        ..Profile::default()
    };
    profile.validate().map_err(e)?;

    Ok(DefaultBundle {
        profile,
        ca_key_pem: key_pem(&ca_key)?,
        client_key_pem: key_pem(&client_key)?,
        server_key_pem: key_pem(&server_key)?,
        ca_cert_pem: ca_pem,
        client_cert_pem: client_pem,
        server_cert_pem: server_pem,
    })
}
