//! The card's content and fixed parameters, loadable from / savable to TOML.
//!
//! See `sim/docs/profile.md` for the file format.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default GSMA IoT SAFE applet AID.
pub const DEFAULT_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10];

/// Key type `13`: NIST P-256, persistent.
pub const KEY_TYPE_P256_PERSISTENT: u8 = 0x13;
/// Key type `14`: NIST P-256, volatile.
pub const KEY_TYPE_P256_VOLATILE: u8 = 0x14;
/// Key type `A0`: HMAC-capable secret.
pub const KEY_TYPE_SECRET_HMAC: u8 = 0xA0;

/// Longest secret-key value (512 bits, IoT.04 J3).
pub const MAX_SECRET_LEN: usize = 64;

/// Crypto-function bit: signature generation / verification.
pub const CF_SIGNATURE: u8 = 0x01;
/// Crypto-function bit: key generation.
pub const CF_KEY_GENERATION: u8 = 0x02;
/// Crypto-function bit: key agreement.
pub const CF_KEY_AGREEMENT: u8 = 0x04;
/// Crypto-function bit: key derivation.
pub const CF_KEY_DERIVATION: u8 = 0x08;

/// Access-condition bit: read.
pub const ACCESS_READ: u8 = 0x01;
/// Access-condition bit: update.
pub const ACCESS_UPDATE: u8 = 0x02;

/// Signature algorithm bit: ECDSA.
pub const SIG_ECDSA: u8 = 0x04;
/// Key agreement bit: ECKA (ECKAS-DH1).
pub const KA_ECKA: u8 = 0x01;

/// File usage `01`: general purpose.
pub const FILE_USAGE_GENERAL: u8 = 0x01;
/// File usage `02`: X.509 certificate.
pub const FILE_USAGE_CERTIFICATE: u8 = 0x02;

/// Object state (tag `4A`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// `01`: activated (filled).
    #[default]
    Activated,
    /// `00`: deactivated (empty or partially filled).
    Deactivated,
}

impl ObjectState {
    /// The byte value of tag `4A`.
    pub fn byte(self) -> u8 {
        match self {
            ObjectState::Activated => 0x01,
            ObjectState::Deactivated => 0x00,
        }
    }
}

/// The four object classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectClass {
    /// Private keys (`C1`, tags `74`/`84`).
    PrivateKey,
    /// Public keys (`C2`, tags `75`/`85`).
    PublicKey,
    /// Files (`C3`, tags `73`/`83`).
    File,
    /// Secret keys (`C4`, tags `76`/`86`).
    SecretKey,
}

impl ObjectClass {
    /// Short name as used by the control socket: `private`, `public`, `file`, `secret`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectClass::PrivateKey => "private",
            ObjectClass::PublicKey => "public",
            ObjectClass::File => "file",
            ObjectClass::SecretKey => "secret",
        }
    }
}

impl std::fmt::Display for ObjectClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ObjectClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "private" | "private_key" | "priv" => Ok(ObjectClass::PrivateKey),
            "public" | "public_key" | "pub" => Ok(ObjectClass::PublicKey),
            "file" => Ok(ObjectClass::File),
            "secret" | "secret_key" => Ok(ObjectClass::SecretKey),
            _ => Err(format!(
                "unknown object class {s:?} (expected private, public, file or secret)"
            )),
        }
    }
}

/// Which factory objects (those the device did not create) the device may replace or
/// delete with STORE DATA. Secret keys are never changeable from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactoryObjects {
    /// Only those whose access conditions (tag `60`) include update (`02`).
    #[default]
    UpdateAccess,
    /// None.
    Protected,
    /// All (except secret keys).
    Writable,
}

impl std::str::FromStr for FactoryObjects {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "update-access" => Ok(FactoryObjects::UpdateAccess),
            "protected" => Ok(FactoryObjects::Protected),
            "writable" => Ok(FactoryObjects::Writable),
            _ => Err(format!(
                "unknown value {s:?} (expected update-access, protected or writable)"
            )),
        }
    }
}

/// An object the device created with STORE DATA (persisted in the profile as
/// `[[device_object]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceObject {
    /// Object class.
    pub class: ObjectClass,
    /// Object ID.
    #[serde(with = "hex_bytes")]
    pub id: Vec<u8>,
    /// Files: the slot size declared at creation (tag `20`); updates may not exceed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_size: Option<u16>,
    /// Private keys created with `71` whose public key has another ID: that ID
    /// (GENERATE KEY PAIR fills it).
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub public_id: Option<Vec<u8>>,
}

/// Values announced by GET DATA application information (except `11` and `B7`,
/// which are [`Profile::applet_id`] and [`Profile::max_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppInfo {
    /// Tag `10`.
    pub version: u8,
    /// Tag `B1`.
    pub max_files: u8,
    /// Tag `B2`.
    pub max_private_keys: u8,
    /// Tag `B3`.
    pub max_public_keys: u8,
    /// Tag `B4`.
    pub max_secret_keys: u8,
    /// Tag `90`/`61`.
    #[serde(with = "hexnum")]
    pub crypto_functions: u8,
    /// Tag `91` (2 bytes).
    #[serde(with = "hexnum")]
    pub hash_algos: u16,
    /// Tag `92`.
    #[serde(with = "hexnum")]
    pub signature_algos: u8,
    /// Tag `93`/`6F`.
    #[serde(with = "hexnum")]
    pub key_agreement_algos: u8,
    /// Tag `94`.
    #[serde(with = "hexnum")]
    pub key_derivation_algos: u8,
}

impl Default for AppInfo {
    fn default() -> Self {
        AppInfo {
            version: 0x10,
            max_files: 10,
            max_private_keys: 10,
            max_public_keys: 10,
            max_secret_keys: 10,
            crypto_functions: CF_SIGNATURE
                | CF_KEY_GENERATION
                | CF_KEY_AGREEMENT
                | CF_KEY_DERIVATION,
            hash_algos: 0x0007,
            signature_algos: SIG_ECDSA,
            key_agreement_algos: KA_ECKA,
            key_derivation_algos: 0x03,
        }
    }
}

/// A private-key object (class `C1`, tags `74`/`84`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateKey {
    /// Object ID (opaque bytes).
    #[serde(with = "hex_bytes")]
    pub id: Vec<u8>,
    /// Optional label (opaque bytes; a string in TOML when UTF-8).
    #[serde(default, with = "label_serde", skip_serializing_if = "Option::is_none")]
    pub label: Option<Vec<u8>>,
    /// Key type (tag `4B`), `13` or `14`.
    #[serde(with = "hexnum", default = "d_key_type")]
    pub key_type: u8,
    /// Object state (tag `4A`).
    #[serde(default)]
    pub state: ObjectState,
    /// Access conditions (tag `60`).
    #[serde(with = "hexnum", default = "d_access_update")]
    pub access: u8,
    /// Key-specific usage (tag `4E`).
    #[serde(with = "hexnum", default = "d_one")]
    pub usage: u8,
    /// Cryptographic functions (tag `61`).
    #[serde(with = "hexnum", default = "d_cf_sig")]
    pub crypto_functions: u8,
    /// Signature algorithms (tag `92`).
    #[serde(with = "hexnum", default = "d_sig")]
    pub signature_algos: u8,
    /// Hash algorithms (tag `91`).
    #[serde(with = "hexnum", default = "d_hash")]
    pub hash_algos: u16,
    /// Key agreement algorithms (tag `6F`).
    #[serde(with = "hexnum", default)]
    pub key_agreement_algos: u8,
    /// The private scalar (32 bytes) if the container is filled.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub private: Option<Vec<u8>>,
}

/// A public-key object (class `C2`, tags `75`/`85`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// Object ID.
    #[serde(with = "hex_bytes")]
    pub id: Vec<u8>,
    /// Optional label.
    #[serde(default, with = "label_serde", skip_serializing_if = "Option::is_none")]
    pub label: Option<Vec<u8>>,
    /// Key type (tag `4B`).
    #[serde(with = "hexnum", default = "d_key_type")]
    pub key_type: u8,
    /// Object state (tag `4A`).
    #[serde(default)]
    pub state: ObjectState,
    /// Access conditions (tag `60`); `02` (update) allows PUT PUBLIC KEY.
    #[serde(with = "hexnum", default = "d_access_read")]
    pub access: u8,
    /// Key-specific usage (tag `4E`).
    #[serde(with = "hexnum", default = "d_one")]
    pub usage: u8,
    /// Cryptographic functions (tag `61`).
    #[serde(with = "hexnum", default = "d_cf_sig")]
    pub crypto_functions: u8,
    /// Signature algorithms (tag `92`).
    #[serde(with = "hexnum", default = "d_sig")]
    pub signature_algos: u8,
    /// Hash algorithms (tag `91`).
    #[serde(with = "hexnum", default = "d_hash")]
    pub hash_algos: u16,
    /// Key agreement algorithms (tag `6F`).
    #[serde(with = "hexnum", default)]
    pub key_agreement_algos: u8,
    /// Uncompressed point `04||X||Y` if filled.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub point: Option<Vec<u8>>,
}

/// A file object (class `C3`, tags `73`/`83`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FileToml", into = "FileToml")]
pub struct File {
    /// Object ID.
    pub id: Vec<u8>,
    /// Optional label.
    pub label: Option<Vec<u8>>,
    /// File-specific usage (tag `21`): `01` general, `02` certificate.
    pub usage: u8,
    /// Object state (tag `4A`).
    pub state: ObjectState,
    /// Access conditions (tag `60`).
    pub access: u8,
    /// Content; its length is the size announced in tag `20`.
    pub content: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(with = "hex_bytes")]
    id: Vec<u8>,
    #[serde(default, with = "label_serde", skip_serializing_if = "Option::is_none")]
    label: Option<Vec<u8>>,
    #[serde(with = "hexnum", default = "d_one")]
    usage: u8,
    #[serde(default)]
    state: ObjectState,
    #[serde(with = "hexnum", default = "d_access_read")]
    access: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_base64: Option<String>,
}

impl TryFrom<FileToml> for File {
    type Error = String;
    fn try_from(t: FileToml) -> Result<File, String> {
        let content = match (t.content_hex, t.content_base64) {
            (Some(_), Some(_)) => {
                return Err("file: give content_hex or content_base64, not both".into());
            }
            (Some(h), None) => decode_hex(&h)?,
            (None, Some(b)) => {
                use base64ct::Encoding;
                let clean: String = b.chars().filter(|c| !c.is_whitespace()).collect();
                base64ct::Base64::decode_vec(&clean[..])
                    .map_err(|e| format!("file content_base64: {e}"))?
            }
            (None, None) => Vec::new(),
        };
        Ok(File {
            id: t.id,
            label: t.label,
            usage: t.usage,
            state: t.state,
            access: t.access,
            content,
        })
    }
}

impl From<File> for FileToml {
    fn from(f: File) -> FileToml {
        use base64ct::Encoding;
        FileToml {
            id: f.id,
            label: f.label,
            usage: f.usage,
            state: f.state,
            access: f.access,
            content_hex: None,
            content_base64: if f.content.is_empty() {
                None
            } else {
                Some(base64ct::Base64::encode_string(&f.content))
            },
        }
    }
}

/// A secret-key object (class `C4`, tags `76`/`86`): a pre-shared key used by COMPUTE PRF
/// (`48`) and COMPUTE HKDF (`4A`). Its value never leaves the card (IoT.04 I2/I9): GET DATA
/// shows only the information structure, no device command reads, changes or deletes it,
/// and `Debug` prints its length only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// Object ID.
    #[serde(with = "hex_bytes")]
    pub id: Vec<u8>,
    /// Optional label. This project stores the PSK identity as the label (`76`).
    #[serde(default, with = "label_serde", skip_serializing_if = "Option::is_none")]
    pub label: Option<Vec<u8>>,
    /// Key type (tag `4B`), e.g. `A0`.
    #[serde(with = "hexnum", default = "d_secret_type")]
    pub key_type: u8,
    /// Object state (tag `4A`).
    #[serde(default)]
    pub state: ObjectState,
    /// Access conditions (tag `60`).
    #[serde(with = "hexnum", default = "d_access_rw")]
    pub access: u8,
    /// Cryptographic functions (tag `61`).
    #[serde(with = "hexnum", default = "d_cf_kd")]
    pub crypto_functions: u8,
    /// Key derivation algorithms (tag `94`).
    #[serde(with = "hexnum", default)]
    pub key_derivation_algos: u8,
    /// Secret value (1..64 bytes) if filled.
    #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<u8>>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("key_type", &self.key_type)
            .field("state", &self.state)
            .field("access", &self.access)
            .field("crypto_functions", &self.crypto_functions)
            .field("key_derivation_algos", &self.key_derivation_algos)
            .field(
                "value",
                &self
                    .value
                    .as_ref()
                    .map(|v| format!("<redacted, {} bytes>", v.len())),
            )
            .finish()
    }
}

/// The whole card content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Applet AID.
    #[serde(default = "d_aid", with = "hex_bytes")]
    pub aid: Vec<u8>,
    /// Applet proprietary identifier (tag `11`, normally 32 bytes).
    #[serde(default = "d_applet_id", with = "hex_bytes")]
    pub applet_id: Vec<u8>,
    /// Maximum number of concurrently open sessions, card-wide (tag `B7`).
    #[serde(default = "d_max_sessions")]
    pub max_sessions: u8,
    /// Highest logical channel number (channels `1..=max_channels` can be opened).
    #[serde(default = "d_max_channels")]
    pub max_channels: u8,
    /// Local provisioning profile (STORE DATA) offered to the device. Off: STORE DATA
    /// answers `6D00` like a card without it.
    #[serde(default)]
    pub provisioning: bool,
    /// Which factory objects the device may replace or delete (STORE DATA).
    #[serde(default, skip_serializing_if = "is_default")]
    pub factory_objects: FactoryObjects,
    /// Total bytes available for file contents and file slots (STORE DATA `74`/`77` beyond
    /// it answer `6A84`); 0 = unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub store_size: u32,
    /// Application information values.
    #[serde(default)]
    pub app_info: AppInfo,
    /// Private keys.
    #[serde(default, rename = "private_key", skip_serializing_if = "Vec::is_empty")]
    pub private_keys: Vec<PrivateKey>,
    /// Public keys.
    #[serde(default, rename = "public_key", skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PublicKey>,
    /// Files.
    #[serde(default, rename = "file", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// Secret keys.
    #[serde(default, rename = "secret_key", skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<SecretKey>,
    /// Objects created by the device (STORE DATA); the rest are factory objects.
    #[serde(
        default,
        rename = "device_object",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub device_objects: Vec<DeviceObject>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            aid: d_aid(),
            applet_id: d_applet_id(),
            max_sessions: d_max_sessions(),
            max_channels: d_max_channels(),
            provisioning: false,
            factory_objects: FactoryObjects::default(),
            store_size: 0,
            app_info: AppInfo::default(),
            private_keys: Vec::new(),
            public_keys: Vec::new(),
            files: Vec::new(),
            secret_keys: Vec::new(),
            device_objects: Vec::new(),
        }
    }
}

/// Error loading, saving or validating a profile.
#[derive(Debug)]
pub enum ProfileError {
    /// File I/O failed.
    Io(std::io::Error),
    /// TOML syntax / schema error.
    Toml(String),
    /// Semantically invalid content.
    Invalid(String),
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProfileError::Io(e) => write!(f, "I/O error: {e}"),
            ProfileError::Toml(e) => write!(f, "TOML error: {e}"),
            ProfileError::Invalid(e) => write!(f, "invalid profile: {e}"),
        }
    }
}

impl std::error::Error for ProfileError {}

impl From<std::io::Error> for ProfileError {
    fn from(e: std::io::Error) -> Self {
        ProfileError::Io(e)
    }
}

impl Profile {
    /// Reads and validates a TOML profile.
    pub fn load(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)?;
        Profile::from_toml(&text)
    }

    /// Parses and validates a TOML profile.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Toml(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> Result<String, ProfileError> {
        toml::to_string(self).map_err(|e| ProfileError::Toml(e.to_string()))
    }

    /// Writes the profile as TOML, atomically: a temporary file in the same directory is
    /// written, synced and renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ProfileError> {
        let path = path.as_ref();
        let text = self.to_toml()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "profile".into());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ProfileError::Io(e)
        })
    }

    /// The same profile with the provisioning profile (STORE DATA) switched on or off.
    pub fn with_provisioning(mut self, on: bool) -> Profile {
        self.provisioning = on;
        self
    }

    /// The entry of an object the device created, if it did.
    pub fn device_object(&self, class: ObjectClass, id: &[u8]) -> Option<&DeviceObject> {
        self.device_objects
            .iter()
            .find(|d| d.class == class && d.id == id)
    }

    /// Whether the device created this object (STORE DATA).
    pub fn is_device_object(&self, class: ObjectClass, id: &[u8]) -> bool {
        self.device_object(class, id).is_some()
    }

    /// The profile without the objects the device created (the "installed" state).
    pub fn without_device_objects(&self) -> Profile {
        let mut p = self.clone();
        let dev = std::mem::take(&mut p.device_objects);
        let is_dev = |c: ObjectClass, id: &[u8]| dev.iter().any(|d| d.class == c && d.id == id);
        p.private_keys
            .retain(|k| !is_dev(ObjectClass::PrivateKey, &k.id));
        p.public_keys
            .retain(|k| !is_dev(ObjectClass::PublicKey, &k.id));
        p.files.retain(|k| !is_dev(ObjectClass::File, &k.id));
        p.secret_keys
            .retain(|k| !is_dev(ObjectClass::SecretKey, &k.id));
        p
    }

    /// Checks lengths, key material and uniqueness of references.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let bad = |m: String| Err(ProfileError::Invalid(m));
        if self.aid.len() < 5 || self.aid.len() > 16 {
            return bad(format!("aid must be 5..16 bytes, got {}", self.aid.len()));
        }
        if self.applet_id.len() > 127 {
            return bad("applet_id longer than 127 bytes".into());
        }
        if self.max_channels > 19 {
            return bad("max_channels must be 0..19".into());
        }
        fn refs_unique<'a>(
            class: &str,
            items: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
        ) -> Result<(), ProfileError> {
            let mut ids: Vec<&Vec<u8>> = Vec::new();
            let mut labels: Vec<&Vec<u8>> = Vec::new();
            for (id, label) in items {
                if id.is_empty() || id.len() > 127 {
                    return Err(ProfileError::Invalid(format!(
                        "{class}: id must be 1..127 bytes"
                    )));
                }
                if ids.contains(&id) {
                    return Err(ProfileError::Invalid(format!(
                        "{class}: duplicate id {}",
                        hex::encode_upper(id)
                    )));
                }
                ids.push(id);
                if let Some(l) = label {
                    if l.is_empty() || l.len() > 127 {
                        return Err(ProfileError::Invalid(format!(
                            "{class}: label must be 1..127 bytes"
                        )));
                    }
                    if labels.contains(&l) {
                        return Err(ProfileError::Invalid(format!(
                            "{class}: duplicate label {}",
                            String::from_utf8_lossy(l)
                        )));
                    }
                    labels.push(l);
                }
            }
            Ok(())
        }
        refs_unique(
            "private_key",
            self.private_keys.iter().map(|k| (&k.id, &k.label)),
        )?;
        refs_unique(
            "public_key",
            self.public_keys.iter().map(|k| (&k.id, &k.label)),
        )?;
        refs_unique("file", self.files.iter().map(|k| (&k.id, &k.label)))?;
        refs_unique(
            "secret_key",
            self.secret_keys.iter().map(|k| (&k.id, &k.label)),
        )?;
        for k in &self.private_keys {
            if let Some(s) = &k.private
                && p256::SecretKey::from_slice(s).is_err()
            {
                return bad(format!(
                    "private_key {}: not a valid P-256 scalar",
                    hex::encode_upper(&k.id)
                ));
            }
        }
        for k in &self.public_keys {
            if let Some(p) = &k.point
                && (p.len() != 65 || p256::PublicKey::from_sec1_bytes(p).is_err())
            {
                return bad(format!(
                    "public_key {}: point must be an uncompressed P-256 point",
                    hex::encode_upper(&k.id)
                ));
            }
        }
        for k in &self.secret_keys {
            if let Some(v) = &k.value
                && (v.is_empty() || v.len() > MAX_SECRET_LEN)
            {
                return bad(format!(
                    "secret_key {}: value must be 1..{MAX_SECRET_LEN} bytes",
                    hex::encode_upper(&k.id)
                ));
            }
        }
        for f in &self.files {
            if f.content.len() > 0xFFFF {
                return bad("file larger than 65535 bytes".into());
            }
        }
        for d in &self.device_objects {
            if d.id.is_empty() || d.id.len() > 127 {
                return bad("device_object: id must be 1..127 bytes".into());
            }
        }
        Ok(())
    }

    /// Private key by ID.
    pub fn private_key(&self, id: &[u8]) -> Option<&PrivateKey> {
        self.private_keys.iter().find(|k| k.id == id)
    }

    /// Public key by ID.
    pub fn public_key(&self, id: &[u8]) -> Option<&PublicKey> {
        self.public_keys.iter().find(|k| k.id == id)
    }

    /// File by ID.
    pub fn file(&self, id: &[u8]) -> Option<&File> {
        self.files.iter().find(|k| k.id == id)
    }

    /// Secret key by ID.
    pub fn secret_key(&self, id: &[u8]) -> Option<&SecretKey> {
        self.secret_keys.iter().find(|k| k.id == id)
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn d_aid() -> Vec<u8> {
    DEFAULT_AID.to_vec()
}
fn d_applet_id() -> Vec<u8> {
    let mut v = b"iotsafe-sim simulated applet 0.1".to_vec();
    v.resize(32, 0);
    v
}
fn d_max_sessions() -> u8 {
    4
}
fn d_max_channels() -> u8 {
    19
}
fn d_key_type() -> u8 {
    KEY_TYPE_P256_PERSISTENT
}
fn d_secret_type() -> u8 {
    KEY_TYPE_SECRET_HMAC
}
fn d_access_read() -> u8 {
    ACCESS_READ
}
fn d_access_update() -> u8 {
    ACCESS_UPDATE
}
fn d_access_rw() -> u8 {
    ACCESS_READ | ACCESS_UPDATE
}
fn d_one() -> u8 {
    1
}
fn d_cf_sig() -> u8 {
    CF_SIGNATURE
}
fn d_cf_kd() -> u8 {
    CF_KEY_DERIVATION
}
fn d_sig() -> u8 {
    SIG_ECDSA
}
fn d_hash() -> u16 {
    0x0007
}

/// Decodes the hex notation of profile files, the control socket and the command line:
/// hex digits in either case, with ASCII whitespace, `:` and `_` allowed as separators.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != ':' && *c != '_')
        .collect();
    hex::decode(&digits).map_err(|e| match e {
        hex::FromHexError::OddLength => format!("odd number of hex digits in {s:?}"),
        _ => format!("invalid hex in {s:?}"),
    })
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        crate::profile::decode_hex(&s).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode_upper(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = String::deserialize(d)?;
        crate::profile::decode_hex(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

mod label_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Hex { hex: String },
    }

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => match std::str::from_utf8(b) {
                Ok(t) => Repr::Text(t.to_string()).serialize(s),
                Err(_) => Repr::Hex {
                    hex: hex::encode_upper(b),
                }
                .serialize(s),
            },
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(Some(t.into_bytes())),
            Repr::Hex { hex } => crate::profile::decode_hex(&hex)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Integers written as `"0x13"` strings; accepts TOML integers (e.g. `0x13`, `19`) or
/// strings `"0x13"` / `"19"`.
mod hexnum {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Int(u64),
        Text(String),
    }

    pub fn serialize<T: Into<u64> + Copy, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        let v: u64 = (*v).into();
        let width = std::mem::size_of::<T>() * 2;
        s.serialize_str(&format!("0x{v:0width$X}"))
    }

    pub fn deserialize<'de, T: TryFrom<u64>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let v = match Repr::deserialize(d)? {
            Repr::Int(i) => i,
            Repr::Text(t) => {
                let t = t.trim();
                let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => t.parse(),
                };
                r.map_err(|_| serde::de::Error::custom(format!("bad number {t:?}")))?
            }
        };
        T::try_from(v).map_err(|_| serde::de::Error::custom(format!("number {v} out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(hex::encode_upper([0x00, 0xAB, 0x7f]), "00AB7F");
        assert_eq!(decode_hex("00ab 7F:01").unwrap(), vec![0, 0xAB, 0x7F, 1]);
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
