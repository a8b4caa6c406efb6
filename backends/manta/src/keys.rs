//! SSH public keys: OpenSSH `authorized_keys`-style lines, the SSH wire
//! format, and the MD5 colon-hex fingerprints Manta uses as key ids.

use std::fmt::Write as _;

use base64::Engine as _;
use md5::{Digest, Md5};
use rsa::BigUint;

/// An account key the server can verify signatures with.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    /// ed25519 / DSA: parsed (so the fingerprint is known) but never verified.
    Unsupported(String),
}

impl PublicKey {
    /// http-signature's key type name (`rsa`, `ecdsa`, `ed25519`, `dsa`).
    pub fn kind(&self) -> &str {
        match self {
            PublicKey::Rsa(_) => "rsa",
            PublicKey::P256(_) | PublicKey::P384(_) => "ecdsa",
            PublicKey::Unsupported(t) if t == "ssh-dss" => "dsa",
            PublicKey::Unsupported(t) if t == "ssh-ed25519" => "ed25519",
            PublicKey::Unsupported(t) => t,
        }
    }
}

/// A key plus its MD5 fingerprint (`dc:1c:...`).
#[derive(Clone, Debug)]
pub struct AccountKey {
    pub fingerprint: String,
    pub key: PublicKey,
    pub comment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenSSH public key line")]
    Format,
    #[error("bad base64 in key")]
    Base64,
    #[error("truncated or malformed SSH key blob")]
    Blob,
    #[error("unsupported key type {0}")]
    Unsupported(String),
    #[error("invalid key material: {0}")]
    Invalid(String),
}

/// MD5 fingerprint of an SSH wire-format key blob, colon-separated hex.
pub fn md5_fingerprint(blob: &[u8]) -> String {
    let digest = Md5::digest(blob);
    let mut s = String::with_capacity(47);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Reader for SSH wire-format (`string`, `mpint`, `uint32`).
pub struct WireReader<'a> {
    buf: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        WireReader { buf }
    }

    pub fn u32(&mut self) -> Result<u32, KeyError> {
        if self.buf.len() < 4 {
            return Err(KeyError::Blob);
        }
        let (head, rest) = self.buf.split_at(4);
        self.buf = rest;
        Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    pub fn string(&mut self) -> Result<&'a [u8], KeyError> {
        let len = self.u32()? as usize;
        if self.buf.len() < len {
            return Err(KeyError::Blob);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    pub fn mpint(&mut self) -> Result<BigUint, KeyError> {
        Ok(BigUint::from_bytes_be(self.string()?))
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Writer for SSH wire-format.
#[derive(Default)]
pub struct WireWriter {
    pub buf: Vec<u8>,
}

impl WireWriter {
    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(s);
        self
    }

    pub fn mpint(&mut self, n: &BigUint) -> &mut Self {
        let mut bytes = n.to_bytes_be();
        if bytes == [0] {
            bytes.clear();
        } else if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            bytes.insert(0, 0);
        }
        self.string(&bytes)
    }
}

/// Parses a public key from its SSH wire-format blob.
pub fn parse_blob(blob: &[u8]) -> Result<PublicKey, KeyError> {
    let mut r = WireReader::new(blob);
    let ty = String::from_utf8_lossy(r.string()?).into_owned();
    match ty.as_str() {
        "ssh-rsa" => {
            let e = r.mpint()?;
            let n = r.mpint()?;
            let key = rsa::RsaPublicKey::new_with_max_size(n, e, 16384)
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            Ok(PublicKey::Rsa(key))
        }
        "ecdsa-sha2-nistp256" => {
            let _curve = r.string()?;
            let point = r.string()?;
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(|e| KeyError::Invalid(e.to_string()))
        }
        "ecdsa-sha2-nistp384" => {
            let _curve = r.string()?;
            let point = r.string()?;
            p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P384)
                .map_err(|e| KeyError::Invalid(e.to_string()))
        }
        "ssh-ed25519" | "ssh-dss" => Ok(PublicKey::Unsupported(ty)),
        other => Err(KeyError::Unsupported(other.to_string())),
    }
}

/// Parses one OpenSSH public key line (`ssh-rsa AAAA... comment`).
pub fn parse_openssh_public(line: &str) -> Result<AccountKey, KeyError> {
    let mut parts = line.split_whitespace();
    let _ty = parts.next().ok_or(KeyError::Format)?;
    let b64 = parts.next().ok_or(KeyError::Format)?;
    let comment = parts.collect::<Vec<_>>().join(" ");
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Base64)?;
    let key = parse_blob(&blob)?;
    Ok(AccountKey {
        fingerprint: md5_fingerprint(&blob),
        key,
        comment,
    })
}

/// Reads every key line of an OpenSSH public key file (`.pub` or
/// `authorized_keys`; blank lines and `#` comments are skipped).
pub fn read_public_key_file(path: &std::path::Path) -> Result<Vec<AccountKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(parse_openssh_public(line).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    if keys.is_empty() {
        return Err(format!("{}: no public key found", path.display()));
    }
    Ok(keys)
}

/// SSH wire blob of an RSA public key.
pub fn rsa_blob(n: &BigUint, e: &BigUint) -> Vec<u8> {
    let mut w = WireWriter::default();
    w.string(b"ssh-rsa").mpint(e).mpint(n);
    w.buf
}

/// SSH wire blob of an ECDSA public key (`curve` is `nistp256`/`nistp384`).
pub fn ecdsa_blob(curve: &str, sec1_point: &[u8]) -> Vec<u8> {
    let mut w = WireWriter::default();
    w.string(format!("ecdsa-sha2-{curve}").as_bytes())
        .string(curve.as_bytes())
        .string(sec1_point);
    w.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public keys and fingerprints from the captured node-manta transcripts.
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCi2tzYLOT+JDIOg/1t74entrs+yiwIOso1dRkSd6DZJQdYKkO5QJ2EfcGUgh2IRQXMDmpeyI60un0PZrsyhTACFUPGhPhmpKmFkahedWUWnVXl0EtWjDTMXe5tqpqp6T9y9+dNVWcTWOgTWN/IrJd0d8C76bwqzGsIxu6Qvn1mAZu5fbnXrZNK/dEfr3+yZ/CWvX6WX9euSfrUiae9eeVbahBx2Qk19vu+XLUVi0YKiIIiwsXkRcRH3eUujUldfL6+unE0sGUoIJTHI1x8OVL6tawdBhgnJhOHcZJo+kDvJEkpDydoXJg6xMBW2VLOMZvY7+ZweK+CAD9NRDBz+4RD manta-test-rsa";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBECzvsBUyIzV8qmr6x0twZ98SUQjBUn1TSz+GEGMpgSEKvABfirzlLqFTG3hc7iGgG9pJQjpX6wUrerNbD2lJDo= manta-test-ecdsa";
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWSwYWQA3Mu5psvJ58F1Hh8Exn8n7KGFsjQeKncDPyS manta-test-ed25519";

    #[test]
    fn fingerprints_match_captures() {
        let k = parse_openssh_public(RSA).expect("rsa");
        assert_eq!(
            k.fingerprint,
            "dc:1c:e5:cc:d0:89:62:90:cc:0e:a3:7a:cf:7e:f1:20"
        );
        assert_eq!(k.key.kind(), "rsa");
        assert_eq!(k.comment, "manta-test-rsa");
        let k = parse_openssh_public(ECDSA).expect("ecdsa");
        assert_eq!(
            k.fingerprint,
            "e5:2e:dc:62:ac:0e:bd:01:5a:c3:29:5f:dd:c1:61:30"
        );
        assert_eq!(k.key.kind(), "ecdsa");
        let k = parse_openssh_public(ED25519).expect("ed25519");
        assert_eq!(
            k.fingerprint,
            "93:d6:d3:68:a3:df:cd:0b:31:11:97:5b:85:05:79:79"
        );
        assert_eq!(k.key.kind(), "ed25519");
    }

    #[test]
    fn rsa_blob_roundtrip() {
        let k = parse_openssh_public(RSA).expect("rsa");
        let PublicKey::Rsa(pk) = k.key else {
            panic!("not rsa")
        };
        use rsa::traits::PublicKeyParts;
        let blob = rsa_blob(pk.n(), pk.e());
        assert_eq!(md5_fingerprint(&blob), k.fingerprint);
    }
}
