//! The card's encodings of public keys and signatures, in every form real applets send.

use super::tlv;

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7).
pub const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// The P-256 point an X.509 certificate (DER, as a certificate file holds it) certifies.
pub fn certificate_point(der_bytes: &[u8]) -> Option<[u8; 65]> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der_bytes).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.parameters.as_ref()?.to_der().ok()? != P256_EC_PARAMS {
        return None;
    }
    spki.subject_public_key
        .as_bytes()
        .and_then(|b| <[u8; 65]>::try_from(b).ok())
        .filter(|p| p[0] == 0x04)
}

/// `34 45 49 43 86 41 04 X Y` (or a bare `04 X Y`) → the point.
pub fn parse_public_key(data: &[u8]) -> Option<[u8; 65]> {
    let point = if data.first() == Some(&0x34) {
        let (outer, _) = tlv::read_one(data).ok()?;
        let (inner, _) = tlv::read_one(outer.value).ok()?;
        if inner.tag != 0x49 {
            return None;
        }
        tlv::parse_all(inner.value)
            .ok()?
            .into_iter()
            .find(|t| t.tag == 0x86)?
            .value
    } else {
        data
    };
    if point.len() == 65 && point[0] == 0x04 {
        point.try_into().ok()
    } else {
        None
    }
}

/// `33 40 r s`, `33 00 40 r s`, or a DER ECDSA-Sig-Value inside `33` → raw `r‖s`.
pub fn parse_signature(data: &[u8]) -> Option<[u8; 64]> {
    if data.first() != Some(&0x33) {
        return None;
    }
    let value: &[u8] = match data.get(1..3) {
        // Two-byte length without the 82 prefix, as some cards send it.
        Some([0x00, len]) if data.len() == 3 + *len as usize => &data[3..],
        _ => tlv::read_one(data).ok()?.0.value,
    };
    if value.len() == 64 {
        return value.try_into().ok();
    }
    let signature = p256::ecdsa::Signature::from_der(value).ok()?;
    Some(signature.to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (DER) of a new key on `curve`, made by the openssl command.
    fn certificate_on(curve: &str) -> Vec<u8> {
        let dir =
            std::env::temp_dir().join(format!("iotsafe-formats-{curve}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.der");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg(format!("ec_paramgen_curve:{curve}"))
            .args([
                "-nodes",
                "-subj",
                "/CN=curve",
                "-days",
                "1",
                "-outform",
                "DER",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let der = std::fs::read(&cert).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        der
    }

    #[test]
    fn only_a_p256_certificate_has_a_point() {
        let p256 = certificate_on("prime256v1");
        assert!(certificate_point(&p256).is_some_and(|p| p[0] == 0x04));
        // secp256k1 points are 65 bytes too: only the curve tells them apart.
        assert_eq!(certificate_point(&certificate_on("secp256k1")), None);
        assert_eq!(certificate_point(&certificate_on("secp384r1")), None);
        assert_eq!(certificate_point(&p256[..p256.len() - 1]), None);
    }

    #[test]
    fn signature_forms() {
        let rs: Vec<u8> = (0..64).collect();
        let one = [&[0x33, 0x40][..], &rs].concat();
        let two = [&[0x33, 0x00, 0x40][..], &rs].concat();
        let ber = [&[0x33, 0x81, 0x40][..], &rs].concat();
        for form in [one, two, ber] {
            assert_eq!(parse_signature(&form).unwrap().to_vec(), rs);
        }
        // DER with a leading zero on r and a short s.
        let mut der = vec![0x30, 0x00, 0x02, 0x21, 0x00];
        der.extend_from_slice(&[0x80; 32]);
        der.extend_from_slice(&[0x02, 0x02, 0x01, 0x02]);
        der[1] = (der.len() - 2) as u8;
        let wrapped = [&[0x33, der.len() as u8][..], &der].concat();
        let raw = parse_signature(&wrapped).unwrap();
        assert_eq!(&raw[..32], &[0x80; 32]);
        assert_eq!(&raw[62..], &[1, 2]);
        assert!(parse_signature(&[0x33, 0x10, 1, 2]).is_none());
        assert!(parse_signature(&[]).is_none());
    }

    #[test]
    fn public_key_forms() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let full = [&[0x34, 0x45, 0x49, 0x43, 0x86, 0x41][..], &point].concat();
        assert_eq!(parse_public_key(&full).unwrap().to_vec(), point);
        assert_eq!(parse_public_key(&point).unwrap().to_vec(), point);
        assert!(parse_public_key(&full[..20]).is_none());
    }
}
