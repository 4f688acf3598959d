//! Behaviour switches of the simulated card: the encoding styles real applets differ in,
//! paging, latencies, the AID and the number of logical channels.

use std::time::Duration;

/// How the `33` signature TLV length is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureLengthStyle {
    /// `33 40 r||s`.
    #[default]
    OneByte,
    /// `33 00 40 r||s`.
    TwoByte,
}

/// Container style of the GET DATA object list (reference §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectListStyle {
    /// `C1 L <one private key>` … `C2 …` `C4 …` `C3 …` (one wrapper per object).
    #[default]
    PerObject,
    /// `C1 L <all private keys>` `C2 …` `C3 …` `C4 …` (one wrapper per class).
    PerClass,
    /// Info structures concatenated without wrappers.
    NoWrapper,
}

/// Tags of the crypto-function and key-agreement fields in GET DATA application info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppInfoTags {
    /// `90` / `93` (what Orange's library parses).
    #[default]
    Orange,
    /// `61` / `6F` (what the QT-tool trace shows).
    QtApplet,
}

macro_rules! impl_from_str {
    ($t:ty, $( $s:literal => $v:expr ),+ ) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $( $s => Ok($v), )+
                    _ => Err(format!("unknown value {s:?} (expected one of: {})",
                        [$( $s ),+].join(", "))),
                }
            }
        }
    };
}
impl_from_str!(SignatureLengthStyle, "one" => SignatureLengthStyle::OneByte, "two" => SignatureLengthStyle::TwoByte);
impl_from_str!(ObjectListStyle, "per-object" => ObjectListStyle::PerObject, "per-class" => ObjectListStyle::PerClass, "none" => ObjectListStyle::NoWrapper);
impl_from_str!(AppInfoTags, "orange" => AppInfoTags::Orange, "qt" => AppInfoTags::QtApplet);

/// Behaviour switches of the simulated card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOptions {
    /// Answer every response that has data with `61xx`, served by GET RESPONSE.
    pub t0_style: bool,
    /// `33 40` or `33 00 40`.
    pub signature_length_style: SignatureLengthStyle,
    /// Object-list wrapper style.
    pub object_list_style: ObjectListStyle,
    /// `90/93` or `61/6F` in application info.
    pub app_info_tags: AppInfoTags,
    /// Bytes per object-list page; longer lists answer `6300` and continue with P2=`01`.
    pub object_list_page_size: usize,
    /// Sleep at the start of every `transmit`.
    pub latency_per_apdu: Duration,
    /// Extra sleep for every signature computed.
    pub latency_per_signature: Duration,
    /// Overrides the profile's applet AID.
    pub aid: Option<Vec<u8>>,
    /// Overrides the profile's `max_channels`: logical channels `1..=N` can be opened
    /// besides the basic channel (0..=19; larger values count as 19). When none is free,
    /// MANAGE CHANNEL open answers `6A81`. Real UICCs offer 3 or 4.
    pub max_channels: Option<u8>,
}

impl Default for CardOptions {
    fn default() -> Self {
        CardOptions {
            t0_style: false,
            signature_length_style: SignatureLengthStyle::OneByte,
            object_list_style: ObjectListStyle::PerObject,
            app_info_tags: AppInfoTags::Orange,
            object_list_page_size: 255,
            latency_per_apdu: Duration::ZERO,
            latency_per_signature: Duration::ZERO,
            aid: None,
            max_channels: None,
        }
    }
}
