//! Key layouts: how a card references the halves of the default profile's client key pair and
//! its certificate. IoT.05 lets a card give the private and the public key of one pair different
//! IDs (field SIMs do: e.g. private `06`, public `07`, both labelled alike, the certificate in a
//! file of its own); the module has to pair them itself.

use crate::profile::Profile;

/// The references of the client key pair (private key, public key, certificate file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyLayout {
    /// Private `01`, public `01`, certificate file `02`, all labelled `client` (the default).
    #[default]
    SameId,
    /// Private `06` and public `07` both labelled `client`, certificate file `08`
    /// `client-cert` (a field-SIM layout).
    SplitIdsOneLabel,
    /// Private `06` `client`, public `07` `client-pub`, certificate file `08` `client-cert`.
    SplitIdsSplitLabels,
}

/// Every layout, in the order of the documentation.
pub const KEY_LAYOUTS: [KeyLayout; 3] = [
    KeyLayout::SameId,
    KeyLayout::SplitIdsOneLabel,
    KeyLayout::SplitIdsSplitLabels,
];

/// The client pair's references in one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientReferences {
    /// The private key's ID.
    pub private_id: u8,
    /// The private key's label.
    pub private_label: &'static str,
    /// The public key's ID.
    pub public_id: u8,
    /// The public key's label.
    pub public_label: &'static str,
    /// The certificate file's ID.
    pub certificate_id: u8,
    /// The certificate file's label.
    pub certificate_label: &'static str,
}

impl KeyLayout {
    /// The name `init-profile --layout` takes.
    pub fn name(self) -> &'static str {
        match self {
            KeyLayout::SameId => "same-id",
            KeyLayout::SplitIdsOneLabel => "split-ids-one-label",
            KeyLayout::SplitIdsSplitLabels => "split-ids-split-labels",
        }
    }

    /// Where the client pair and its certificate are in this layout.
    pub fn client(self) -> ClientReferences {
        match self {
            KeyLayout::SameId => ClientReferences {
                private_id: 0x01,
                private_label: "client",
                public_id: 0x01,
                public_label: "client",
                certificate_id: 0x02,
                certificate_label: "client",
            },
            KeyLayout::SplitIdsOneLabel => ClientReferences {
                private_id: 0x06,
                private_label: "client",
                public_id: 0x07,
                public_label: "client",
                certificate_id: 0x08,
                certificate_label: "client-cert",
            },
            KeyLayout::SplitIdsSplitLabels => ClientReferences {
                private_id: 0x06,
                private_label: "client",
                public_id: 0x07,
                public_label: "client-pub",
                certificate_id: 0x08,
                certificate_label: "client-cert",
            },
        }
    }
}

impl std::str::FromStr for KeyLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KEY_LAYOUTS
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = KEY_LAYOUTS.iter().map(|l| l.name()).collect();
                format!("unknown key layout {s:?} (expected {})", names.join(", "))
            })
    }
}

impl std::fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Profile {
    /// The profile with the default client pair (private and public key `01`, certificate file
    /// `02`) moved to the references of `layout`. Other objects stay as they are.
    pub fn with_key_layout(mut self, layout: KeyLayout) -> Profile {
        let to = layout.client();
        let from = KeyLayout::SameId.client();
        let label = |l: &str| Some(l.as_bytes().to_vec());
        if let Some(k) = self
            .private_keys
            .iter_mut()
            .find(|k| k.id == [from.private_id])
        {
            k.id = vec![to.private_id];
            k.label = label(to.private_label);
        }
        if let Some(k) = self
            .public_keys
            .iter_mut()
            .find(|k| k.id == [from.public_id])
        {
            k.id = vec![to.public_id];
            k.label = label(to.public_label);
        }
        if let Some(f) = self
            .files
            .iter_mut()
            .find(|f| f.id == [from.certificate_id])
        {
            f.id = vec![to.certificate_id];
            f.label = label(to.certificate_label);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layout_keeps_one_key_pair_under_its_references() {
        let base = crate::default_profile();
        let point = base.public_key(&[1]).and_then(|k| k.point.clone());
        let cert = base.file(&[2]).map(|f| f.content.clone());
        for layout in KEY_LAYOUTS {
            let p = base.clone().with_key_layout(layout);
            p.validate().expect("a valid profile");
            let c = layout.client();
            assert_eq!(
                p.public_key(&[c.public_id]).and_then(|k| k.point.clone()),
                point
            );
            assert_eq!(p.file(&[c.certificate_id]).map(|f| f.content.clone()), cert);
            let private = p.private_key(&[c.private_id]).expect("the private key");
            assert_eq!(private.label.as_deref(), Some(c.private_label.as_bytes()));
            assert_eq!(layout.name().parse::<KeyLayout>(), Ok(layout));
        }
        assert!("other".parse::<KeyLayout>().is_err());
    }
}
