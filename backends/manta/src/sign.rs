//! A small HTTP Signature signer for tests: signs `date: <Date>` the way
//! node-manta (smartdc-auth + http-signature) does, with an RSA or ECDSA
//! private key read from an unencrypted OpenSSH or PEM private key file.
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! let signer = manta_test_server::sign::Signer::from_file("/tmp/home/.ssh/id_rsa", "testuser")?;
//! let (date, authorization) = signer.sign_now();
//! // send `Date: {date}` and `Authorization: {authorization}`
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use rsa::traits::PublicKeyParts;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::keys::{ecdsa_blob, md5_fingerprint, rsa_blob, WireReader};
use crate::util;

enum PrivKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// Signs Manta requests for one key.
pub struct Signer {
    key: PrivKey,
    key_id: String,
    fingerprint: String,
    algorithm: String,
    /// Signatures only depend on the Date header: cache the last one.
    cache: Mutex<Option<(String, String)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

fn openssh_private(text: &str) -> Result<PrivKey, String> {
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64: {e}"))?;
    let magic = b"openssh-key-v1\0";
    let body = raw
        .strip_prefix(magic.as_slice())
        .ok_or("not an openssh-key-v1 key")?;
    let bad = |e: crate::keys::KeyError| e.to_string();
    let mut r = WireReader::new(body);
    let cipher = r.string().map_err(bad)?;
    if cipher != b"none" {
        return Err("encrypted OpenSSH keys are not supported".into());
    }
    let _kdf = r.string().map_err(bad)?;
    let _kdf_opts = r.string().map_err(bad)?;
    let _n = r.u32().map_err(bad)?;
    let _pub = r.string().map_err(bad)?;
    let private = r.string().map_err(bad)?;
    let mut p = WireReader::new(private);
    let (c1, c2) = (p.u32().map_err(bad)?, p.u32().map_err(bad)?);
    if c1 != c2 {
        return Err("corrupt OpenSSH private key".into());
    }
    let ty = p.string().map_err(bad)?;
    match ty {
        b"ssh-rsa" => {
            let n = p.mpint().map_err(bad)?;
            let e = p.mpint().map_err(bad)?;
            let d = p.mpint().map_err(bad)?;
            let _iqmp = p.mpint().map_err(bad)?;
            let pp = p.mpint().map_err(bad)?;
            let q = p.mpint().map_err(bad)?;
            rsa::RsaPrivateKey::from_components(n, e, d, vec![pp, q])
                .map(|k| PrivKey::Rsa(Box::new(k)))
                .map_err(|e| e.to_string())
        }
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" => {
            let _curve = p.string().map_err(bad)?;
            let _q = p.string().map_err(bad)?;
            let d = p.string().map_err(bad)?;
            let d = match d.iter().position(|b| *b != 0) {
                Some(i) => &d[i..],
                None => d,
            };
            if ty == b"ecdsa-sha2-nistp256" {
                let mut buf = [0u8; 32];
                let off = buf.len().checked_sub(d.len()).ok_or("bad P-256 scalar")?;
                buf[off..].copy_from_slice(d);
                p256::ecdsa::SigningKey::from_slice(&buf)
                    .map(PrivKey::P256)
                    .map_err(|e| e.to_string())
            } else {
                let mut buf = [0u8; 48];
                let off = buf.len().checked_sub(d.len()).ok_or("bad P-384 scalar")?;
                buf[off..].copy_from_slice(d);
                p384::ecdsa::SigningKey::from_slice(&buf)
                    .map(PrivKey::P384)
                    .map_err(|e| e.to_string())
            }
        }
        other => Err(format!(
            "unsupported key type {}",
            String::from_utf8_lossy(other)
        )),
    }
}

fn pem_private(text: &str) -> Result<PrivKey, String> {
    use p256::pkcs8::DecodePrivateKey as _;
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    if text.contains("BEGIN RSA PRIVATE KEY") {
        return rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .map(|k| PrivKey::Rsa(Box::new(k)))
            .map_err(|e| e.to_string());
    }
    if text.contains("BEGIN EC PRIVATE KEY") {
        if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(PrivKey::P256(k.into()));
        }
        return p384::SecretKey::from_sec1_pem(text)
            .map(|k| PrivKey::P384(k.into()))
            .map_err(|e| e.to_string());
    }
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
        return Ok(PrivKey::Rsa(Box::new(k)));
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
        return Ok(PrivKey::P256(k.into()));
    }
    p384::SecretKey::from_pkcs8_pem(text)
        .map(|k| PrivKey::P384(k.into()))
        .map_err(|_| "unsupported private key format".to_string())
}

impl Signer {
    /// Parses an unencrypted private key (OpenSSH, PKCS#1, SEC1 or PKCS#8 PEM)
    /// for `account`. RSA keys sign with `rsa-sha256`; P-256 with
    /// `ecdsa-sha256`; P-384 with `ecdsa-sha384` (what node-manta picks, and
    /// what muskie refuses).
    pub fn from_pem(text: &str, account: &str) -> Result<Self, String> {
        let key = if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            openssh_private(text)?
        } else {
            pem_private(text)?
        };
        let (blob, algorithm) = match &key {
            PrivKey::Rsa(k) => (rsa_blob(k.n(), k.e()), "rsa-sha256"),
            PrivKey::P256(k) => (
                ecdsa_blob(
                    "nistp256",
                    k.verifying_key().to_encoded_point(false).as_bytes(),
                ),
                "ecdsa-sha256",
            ),
            PrivKey::P384(k) => (
                ecdsa_blob(
                    "nistp384",
                    k.verifying_key().to_encoded_point(false).as_bytes(),
                ),
                "ecdsa-sha384",
            ),
        };
        let fingerprint = md5_fingerprint(&blob);
        Ok(Signer {
            key,
            key_id: format!("/{account}/keys/{fingerprint}"),
            fingerprint,
            algorithm: algorithm.to_string(),
            cache: Mutex::new(None),
        })
    }

    /// Reads a private key file (see [`Signer::from_pem`]).
    pub fn from_file(path: impl AsRef<Path>, account: &str) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(&text, account)
    }

    /// Overrides the `keyId` (e.g. a sub-user form or a wrong account).
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// Overrides the algorithm (e.g. `rsa-sha1`, `ecdsa-sha512`).
    pub fn with_algorithm(mut self, alg: impl Into<String>) -> Self {
        self.algorithm = alg.into();
        self
    }

    /// The MD5 colon-hex fingerprint (what `MANTA_KEY_ID` holds).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The `keyId` parameter.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Base64 signature of an arbitrary signing string.
    pub fn sign_string(&self, s: &str) -> String {
        let hash = self
            .algorithm
            .split_once('-')
            .map(|x| x.1)
            .unwrap_or("sha256");
        let hashed: Vec<u8> = match hash {
            "sha1" => Sha1::digest(s.as_bytes()).to_vec(),
            "sha384" => Sha384::digest(s.as_bytes()).to_vec(),
            "sha512" => Sha512::digest(s.as_bytes()).to_vec(),
            _ => Sha256::digest(s.as_bytes()).to_vec(),
        };
        let sig: Vec<u8> = match &self.key {
            PrivKey::Rsa(k) => {
                let scheme = match hash {
                    "sha1" => rsa::Pkcs1v15Sign::new::<Sha1>(),
                    "sha384" => rsa::Pkcs1v15Sign::new::<Sha384>(),
                    "sha512" => rsa::Pkcs1v15Sign::new::<Sha512>(),
                    _ => rsa::Pkcs1v15Sign::new::<Sha256>(),
                };
                k.sign(scheme, &hashed).unwrap_or_default()
            }
            PrivKey::P256(k) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                let sig: Result<p256::ecdsa::Signature, _> = k.sign_prehash(&hashed);
                sig.map(|s| s.to_der().as_bytes().to_vec())
                    .unwrap_or_default()
            }
            PrivKey::P384(k) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner;
                let sig: Result<p384::ecdsa::Signature, _> = k.sign_prehash(&hashed);
                sig.map(|s| s.to_der().as_bytes().to_vec())
                    .unwrap_or_default()
            }
        };
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// The `Authorization` header value for a request carrying `Date: {date}`.
    pub fn authorization(&self, date: &str) -> String {
        if let Ok(cache) = self.cache.lock() {
            if let Some((d, a)) = cache.as_ref() {
                if d == date {
                    return a.clone();
                }
            }
        }
        let sig = self.sign_string(&format!("date: {date}"));
        let a = format!(
            "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"date\",signature=\"{sig}\"",
            self.key_id, self.algorithm
        );
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((date.to_string(), a.clone()));
        }
        a
    }

    /// A fresh `(Date, Authorization)` pair.
    pub fn sign_now(&self) -> (String, String) {
        let date = util::http_date(util::now_ms());
        let a = self.authorization(&date);
        (date, a)
    }
}
