//! HTTP Signature authentication exactly as Manta (muskie + http-signature 1.3) verifies it.
//!
//! Every request carries a fresh `Date` and
//! `Authorization: Signature keyId="/<login>[/<subuser>]/keys/<md5 colon-hex>",algorithm="…",headers="date",signature="…"`
//! with no spaces between the parameters (http-signature's parser refuses them). The signed string
//! is `date: <Date>`. Manta looks keys up by their MD5 fingerprint, so the keyId always carries the
//! MD5 form whatever form `MANTA_KEY_ID` was written in (node-manta does the same).
//!
//! Algorithms: http-signature accepts only `sha1|sha256|sha512` hashes with `rsa|dsa|ecdsa` keys,
//! so RSA signs with `rsa-sha256` (or `rsa-sha512`), P-256 with `ecdsa-sha256` (or `-sha512`) and
//! P-384 with `ecdsa-sha512` (node-manta's `ecdsa-sha384` is refused by muskie). ed25519 and DSA keys
//! are refused up front with [`KeyError::UnsupportedKeyType`] instead of failing on every request.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest as _, Sha256, Sha512};

/// Why a private key cannot be used to sign Manta requests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key is of a type Manta refuses (ed25519, DSA, security keys, P-521).
    #[error("{what}: {algorithm} keys cannot sign Manta requests ({reason}); use an RSA or ECDSA P-256/P-384 key")]
    UnsupportedKeyType {
        /// Which key.
        what: String,
        /// Its SSH algorithm name (`ssh-ed25519`, …).
        algorithm: String,
        /// Why Manta refuses it.
        reason: &'static str,
    },
    /// The key is encrypted with a passphrase (use an unencrypted copy or an agent-free key).
    #[error("{what}: encrypted private keys are not supported")]
    Encrypted {
        /// Which key.
        what: String,
    },
    /// The text is not a private key tarvault understands.
    #[error("{what}: not a usable private key: {reason}")]
    Malformed {
        /// Which key.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A hash other than sha256/sha512 was requested.
    #[error("unsupported signature hash {0:?} (Manta accepts sha256 or sha512)")]
    UnsupportedHash(String),
    /// No key matched `MANTA_KEY_ID` in the directory searched.
    #[error("no usable private key found in {} {detail}", dir.display())]
    NoKey {
        /// The directory searched (`~/.ssh`).
        dir: PathBuf,
        /// What was looked for.
        detail: String,
    },
}

/// The hash half of the signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignHash {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl SignHash {
    /// Parses `sha256` or `sha512`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" => Ok(SignHash::Sha256),
            "sha512" => Ok(SignHash::Sha512),
            other => Err(KeyError::UnsupportedHash(other.to_string())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SignHash::Sha256 => "sha256",
            SignHash::Sha512 => "sha512",
        }
    }
}

enum PrivKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// Signs requests for one account with one private key.
pub struct Signer {
    key: PrivKey,
    hash: SignHash,
    key_id: String,
    fingerprint: String,
    /// The signature covers only `date: …`, which changes once a second: reuse it within that
    /// second instead of doing an RSA operation per request.
    cache: Mutex<Option<(String, String)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// A private key, parsed, with the MD5 fingerprint of its public half.
pub struct LoadedKey {
    key: PrivKey,
    fingerprint: String,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    /// Parses an unencrypted private key: OpenSSH (`BEGIN OPENSSH PRIVATE KEY`), PKCS#1 RSA,
    /// SEC1 EC or PKCS#8 PEM. `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            what: what.to_string(),
            reason,
        };
        if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            let pk = match ssh_key::PrivateKey::from_openssh(text) {
                Ok(pk) => pk,
                // One ECDSA key in 256 (a scalar written a byte short), which ssh-key 0.6 refuses.
                Err(e) => {
                    return match super::openssh_ecdsa::parse(text) {
                        Some(super::openssh_ecdsa::EcdsaKey::P256(k)) => {
                            Ok(Self::from_key(PrivKey::P256(k)))
                        }
                        Some(super::openssh_ecdsa::EcdsaKey::P384(k)) => {
                            Ok(Self::from_key(PrivKey::P384(k)))
                        }
                        None => Err(malformed(e.to_string())),
                    }
                }
            };
            if pk.is_encrypted() {
                return Err(KeyError::Encrypted {
                    what: what.to_string(),
                });
            }
            let unsupported = |reason| KeyError::UnsupportedKeyType {
                what: what.to_string(),
                algorithm: pk.algorithm().as_str().to_string(),
                reason,
            };
            let key = match pk.key_data() {
                ssh_key::private::KeypairData::Rsa(kp) => {
                    // Built from the components here: ssh-key 0.6.7's own conversion passes `p`
                    // twice instead of `p` and `q` and fails on every key.
                    let int = |m: &ssh_key::Mpint| {
                        m.as_positive_bytes()
                            .map(rsa::BigUint::from_bytes_be)
                            .ok_or_else(|| malformed("negative RSA component".into()))
                    };
                    let k = rsa::RsaPrivateKey::from_components(
                        int(&kp.public.n)?,
                        int(&kp.public.e)?,
                        int(&kp.private.d)?,
                        vec![int(&kp.private.p)?, int(&kp.private.q)?],
                    )
                    .map_err(|e| malformed(e.to_string()))?;
                    PrivKey::Rsa(Box::new(k))
                }
                ssh_key::private::KeypairData::Ecdsa(kp) => match kp {
                    ssh_key::private::EcdsaKeypair::NistP256 { private, .. } => PrivKey::P256(
                        p256::ecdsa::SigningKey::from_slice(private.as_slice())
                            .map_err(|e| malformed(e.to_string()))?,
                    ),
                    ssh_key::private::EcdsaKeypair::NistP384 { private, .. } => PrivKey::P384(
                        p384::ecdsa::SigningKey::from_slice(private.as_slice())
                            .map_err(|e| malformed(e.to_string()))?,
                    ),
                    _ => {
                        return Err(unsupported(
                            "Manta's key service only verifies P-256 and P-384 ECDSA keys",
                        ))
                    }
                },
                ssh_key::private::KeypairData::Ed25519(_) => {
                    return Err(unsupported(
                        "Manta's http-signature accepts only rsa, dsa and ecdsa algorithms",
                    ))
                }
                _ => return Err(unsupported("Manta does not verify this key type")),
            };
            return Ok(Self::from_key(key));
        }
        if text.contains("ENCRYPTED") {
            return Err(KeyError::Encrypted {
                what: what.to_string(),
            });
        }
        if text.contains("BEGIN RSA PRIVATE KEY") {
            let k =
                rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| malformed(e.to_string()))?;
            return Ok(Self::from_key(PrivKey::Rsa(Box::new(k))));
        }
        if text.contains("BEGIN EC PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
                return Ok(Self::from_key(PrivKey::P256(k.into())));
            }
            let k = p384::SecretKey::from_sec1_pem(text).map_err(|e| malformed(e.to_string()))?;
            return Ok(Self::from_key(PrivKey::P384(k.into())));
        }
        if text.contains("BEGIN PRIVATE KEY") {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                return Ok(Self::from_key(PrivKey::Rsa(Box::new(k))));
            }
            if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
                return Ok(Self::from_key(PrivKey::P256(k.into())));
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text) {
                return Ok(Self::from_key(PrivKey::P384(k.into())));
            }
            return Err(KeyError::UnsupportedKeyType {
                what: what.to_string(),
                algorithm: "PKCS#8 (not RSA, P-256 or P-384)".into(),
                reason: "Manta verifies only RSA and ECDSA P-256/P-384 keys",
            });
        }
        Err(malformed("no PEM or OpenSSH private key block".into()))
    }

    /// Reads and parses a private key file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn from_key(key: PrivKey) -> Self {
        let mut loaded = LoadedKey {
            key,
            fingerprint: String::new(),
        };
        loaded.fingerprint = md5_colon_hex(&loaded.public_blob());
        loaded
    }

    /// The MD5 fingerprint, `aa:bb:…` (what Manta's keyId carries).
    pub fn md5_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `key_id` (as written in `MANTA_KEY_ID`: MD5 colon-hex with or without `MD5:`, or
    /// `SHA256:<base64>`) names this key. SHA256 forms are compared against the public key blob.
    pub fn matches_key_id(&self, key_id: &str) -> bool {
        let id = key_id.trim();
        let md5 = id.strip_prefix("MD5:").unwrap_or(id);
        if md5.eq_ignore_ascii_case(&self.fingerprint) {
            return true;
        }
        if let Some(b64) = id.strip_prefix("SHA256:") {
            let digest = Sha256::digest(self.public_blob());
            let ours = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
            return ours == b64.trim_end_matches('=');
        }
        false
    }

    fn public_blob(&self) -> Vec<u8> {
        match &self.key {
            PrivKey::Rsa(k) => {
                let mut b = Vec::new();
                ssh_string(&mut b, b"ssh-rsa");
                ssh_mpint(&mut b, &k.e().to_bytes_be());
                ssh_mpint(&mut b, &k.n().to_bytes_be());
                b
            }
            PrivKey::P256(k) => ecdsa_blob(
                "nistp256",
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ),
            PrivKey::P384(k) => ecdsa_blob(
                "nistp384",
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ),
        }
    }
}

impl Signer {
    /// A signer for `login` (and optionally an RBAC `subuser`). `hash` defaults per key type
    /// (sha256 for RSA and P-256, sha512 for P-384).
    pub fn new(
        key: LoadedKey,
        login: &str,
        subuser: Option<&str>,
        hash: Option<SignHash>,
    ) -> Signer {
        let hash = hash.unwrap_or(match key.key {
            PrivKey::P384(_) => SignHash::Sha512,
            _ => SignHash::Sha256,
        });
        let key_id = match subuser {
            Some(sub) => format!("/{login}/{sub}/keys/{}", key.fingerprint),
            None => format!("/{login}/keys/{}", key.fingerprint),
        };
        Signer {
            key: key.key,
            hash,
            key_id,
            fingerprint: key.fingerprint,
            cache: Mutex::new(None),
        }
    }

    /// The `keyId` sent (`/login/keys/<md5>`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The MD5 fingerprint of the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The `algorithm` parameter (`rsa-sha256`, `ecdsa-sha256`, …).
    pub fn algorithm(&self) -> String {
        let ty = match self.key {
            PrivKey::Rsa(_) => "rsa",
            PrivKey::P256(_) | PrivKey::P384(_) => "ecdsa",
        };
        format!("{ty}-{}", self.hash.name())
    }

    /// A fresh `Date` value and the matching `Authorization` value.
    pub fn sign_now(&self) -> (String, String) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let auth = self.authorization(&date);
        (date, auth)
    }

    /// The `Authorization` value for a request whose `Date` header is `date`.
    pub fn authorization(&self, date: &str) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, auth)) = cache.as_ref() {
            if d == date {
                return auth.clone();
            }
        }
        let signature = self.sign(format!("date: {date}").as_bytes());
        let auth = format!(
            "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"date\",signature=\"{}\"",
            self.key_id,
            self.algorithm(),
            base64::engine::general_purpose::STANDARD.encode(signature)
        );
        *cache = Some((date.to_string(), auth.clone()));
        auth
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let prehash = match self.hash {
            SignHash::Sha256 => Sha256::digest(msg).to_vec(),
            SignHash::Sha512 => Sha512::digest(msg).to_vec(),
        };
        match (&self.key, self.hash) {
            (PrivKey::Rsa(k), SignHash::Sha256) => {
                rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                    .sign(msg)
                    .to_vec()
            }
            (PrivKey::Rsa(k), SignHash::Sha512) => {
                rsa::pkcs1v15::SigningKey::<Sha512>::new((**k).clone())
                    .sign(msg)
                    .to_vec()
            }
            (PrivKey::P256(k), _) => {
                // A prehash of the field size or longer is always accepted; the error arm is
                // unreachable for sha256/sha512 on P-256.
                let sig: Result<p256::ecdsa::Signature, _> = k.sign_prehash(&prehash);
                sig.map(|s| s.to_der().as_bytes().to_vec())
                    .unwrap_or_default()
            }
            (PrivKey::P384(k), _) => {
                let sig: Result<p384::ecdsa::Signature, _> = k.sign_prehash(&prehash);
                sig.map(|s| s.to_der().as_bytes().to_vec())
                    .unwrap_or_default()
            }
        }
    }
}

fn ssh_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn ssh_mpint(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let trimmed = &be[start..];
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        out.extend_from_slice(&((trimmed.len() + 1) as u32).to_be_bytes());
        out.push(0);
        out.extend_from_slice(trimmed);
    } else {
        ssh_string(out, trimmed);
    }
}

fn ecdsa_blob(curve: &str, point: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    ssh_string(&mut b, format!("ecdsa-sha2-{curve}").as_bytes());
    ssh_string(&mut b, curve.as_bytes());
    ssh_string(&mut b, point);
    b
}

fn md5_colon_hex(blob: &[u8]) -> String {
    use md5::Digest as _;
    let d = md5::Md5::digest(blob);
    d.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
