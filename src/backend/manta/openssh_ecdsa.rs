//! Unencrypted OpenSSH ECDSA private keys, read here where ssh-key 0.6 cannot read them.
//!
//! OpenSSH writes the private scalar as an `mpint` (RFC 4251 §5), which drops leading zero
//! bytes: one P-256 or P-384 key in 256 has a scalar whose first byte is zero and is written one
//! byte short. ssh-key 0.6.7 refuses any length but the field's ("length invalid"), so such a key,
//! made by `ssh-keygen` like any other, could not sign Manta requests. This reads the format
//! (PROTOCOL.key: `openssh-key-v1`, no cipher, one key) for those two curves only, pads the
//! scalar back to the field's size, and checks it against the public point the file also holds.

use base64::Engine;

/// An ECDSA private key read from an OpenSSH file.
pub(super) enum EcdsaKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// The key in `text` (the whole `BEGIN OPENSSH PRIVATE KEY` file), if it is an unencrypted P-256
/// or P-384 key whose scalar matches its public point; `None` otherwise (the caller reports
/// ssh-key's own error then).
pub(super) fn parse(text: &str) -> Option<EcdsaKey> {
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let mut r = Reader(raw.strip_prefix(b"openssh-key-v1\0")?);
    let (cipher, kdf, _kdf_options) = (r.string()?, r.string()?, r.string()?);
    if cipher != b"none" || kdf != b"none" || r.u32()? != 1 {
        return None;
    }
    let _public = r.string()?;
    let mut private = Reader(r.string()?);
    let (check1, check2) = (private.u32()?, private.u32()?);
    if check1 != check2 {
        return None;
    }
    let (kind, _curve, point) = (private.string()?, private.string()?, private.string()?);
    let scalar = private.string()?;
    // An mpint: a leading zero byte only where the top bit would be set; none of a short one.
    let scalar = match scalar.iter().position(|&b| b != 0) {
        Some(first) => &scalar[first..],
        None => return None,
    };
    match kind {
        b"ecdsa-sha2-nistp256" => {
            let key = p256::ecdsa::SigningKey::from_slice(&padded::<32>(scalar)?).ok()?;
            let public = key.verifying_key().to_encoded_point(false);
            (public.as_bytes() == point).then_some(EcdsaKey::P256(key))
        }
        b"ecdsa-sha2-nistp384" => {
            let key = p384::ecdsa::SigningKey::from_slice(&padded::<48>(scalar)?).ok()?;
            let public = key.verifying_key().to_encoded_point(false);
            (public.as_bytes() == point).then_some(EcdsaKey::P384(key))
        }
        _ => None,
    }
}

/// `bytes` (big endian, at most `N` long) zero-padded in front to `N` bytes.
fn padded<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let start = N.checked_sub(bytes.len())?;
    out[start..].copy_from_slice(bytes);
    Some(out)
}

/// SSH wire-format fields (RFC 4251 §5) read off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(s)
    }
}
