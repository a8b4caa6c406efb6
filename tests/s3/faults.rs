//! Bad input and faults against a real server: wrong credentials, a missing bucket, 503s and
//! connection resets (through [`Proxy`]). Each gives a typed error after a bounded number of
//! attempts, and no unverified or partial object ever becomes visible.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::backend::{Backend, BlobKey};
use tarvault::{ErrorKind, PutOptions, Store};

use super::proxy::{Fault, Proxy};
use super::Server;
use crate::common::{addr, key_of, noise, sha512_sri};

pub fn upstream(s: &Server) -> String {
    s.endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The config of `prefix` whose requests go through `proxy`, with `retries` retries.
pub fn proxied_config(s: &Server, proxy: &Proxy, prefix: &str, retries: usize) -> S3Config {
    let mut c = s.config(prefix);
    c.endpoint = Some(proxy.endpoint());
    c.max_retries = retries;
    c.retry_timeout = Duration::from_secs(20);
    c
}

/// A backend whose requests go through `proxy`, with `retries` retries, without the open probe.
fn via_proxy(s: &Server, proxy: &Proxy, prefix: &str, retries: usize) -> S3Backend {
    let c = proxied_config(s, proxy, prefix, retries);
    let store = Arc::new(c.build().expect("client"));
    S3Backend::with_store(store, prefix, format!("{} via proxy", c.describe()))
}

/// The same prefix seen directly (no proxy): what is really stored.
async fn direct(s: &Server, prefix: &str) -> S3Backend {
    S3Backend::connect(&s.config(prefix))
        .await
        .expect("connect")
}

async fn nothing_stored(s: &Server, prefix: &str, key: &BlobKey) {
    let b = direct(s, prefix).await;
    assert!(
        b.head(key).await.expect("head").is_none(),
        "a blob became visible"
    );
    let listed: Vec<BlobKey> = b.list().try_collect().await.expect("list");
    assert!(listed.is_empty(), "objects left behind: {listed:?}");
}

pub async fn wrong_credentials(s: &Server) {
    let mut c = s.config(&Server::fresh_prefix("cred"));
    c.credentials = Some((s.var("AWS_ACCESS_KEY_ID"), "not-the-secret".into()));
    let err = S3Backend::connect(&c)
        .await
        .expect_err("wrong secret must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains(&s.bucket()), "{err}");
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    // The server's own answer stays in the chain: its code tells which setting is wrong.
    let report = err.report().to_string();
    assert!(report.contains("SignatureDoesNotMatch"), "{report}");
    c.credentials = Some(("no-such-key".into(), "x".into()));
    let err = S3Backend::connect(&c)
        .await
        .expect_err("unknown key must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // (AWS and Ceph answer InvalidAccessKeyId, s3s-fs NotSignedUp.)
    let report = err.report().to_string();
    assert!(
        ["InvalidAccessKeyId", "NotSignedUp"]
            .iter()
            .any(|code| report.contains(code)),
        "{report}"
    );
    // Past the open check (a store built without it), operations fail typed, not as "not found".
    c.max_retries = 1;
    let b = S3Backend::with_store(Arc::new(c.build().expect("client")), "p", "bad".into());
    let err = Store::new(b)
        .put_bytes(noise(100, 1), &PutOptions::default())
        .await
        .expect_err("put with a wrong key");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
}

pub async fn missing_bucket(s: &Server) {
    let mut c = s.config("p");
    c.bucket = format!(
        "tarvault-missing-{}",
        Server::fresh_prefix("b").to_lowercase()
    );
    let err = S3Backend::connect(&c)
        .await
        .expect_err("missing bucket must fail");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("bucket"), "{err}");
    // Reads past the open check cannot always tell a missing bucket from a missing object (s3s-fs
    // answers a GET there with a bare 404), which is why `connect` checks the bucket up front.
}

/// A server that answers 503 forever: the put fails after max_retries + 1 attempts per request,
/// quickly, and leaves nothing.
pub async fn unavailable_is_bounded(s: &Server) {
    let proxy = Proxy::start(upstream(s), vec![], Fault::Unavailable).await;
    let prefix = Server::fresh_prefix("503");
    let retries = 2;
    let store = Store::new(via_proxy(s, &proxy, &prefix, retries));
    let data = noise(50_000, 2);
    let t = Instant::now();
    let err = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect_err("503 forever must fail");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    // One blob PUT and two alias marker PUTs, each tried 1 + retries times.
    let n = proxy.connections();
    assert!(n > retries && n <= 3 * (retries + 1), "{n} connections");
    nothing_stored(s, &prefix, &key_of(&data)).await;
}

/// Two 503s, then a healthy server: retries carry the put through.
pub async fn transient_errors_are_retried(s: &Server) {
    let proxy = Proxy::start(
        upstream(s),
        vec![Fault::Unavailable, Fault::Unavailable],
        Fault::Pass,
    )
    .await;
    let prefix = Server::fresh_prefix("retry");
    let store = Store::new(via_proxy(s, &proxy, &prefix, 4));
    let data = noise(80_000, 3);
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("retried put");
    assert!(put.stored);
    let got = store
        .get(&put.digests.integrity())
        .await
        .expect("get")
        .bytes()
        .await;
    assert_eq!(&got.expect("verified")[..], &data[..]);
}

/// Every connection is reset after 1 MiB of request: a large (multipart) put fails typed and
/// leaves nothing visible; with the fault gone, the same put succeeds.
pub async fn reset_mid_upload(s: &Server) {
    let proxy = Proxy::start(upstream(s), vec![], Fault::ResetAfter(1 << 20)).await;
    let prefix = Server::fresh_prefix("reset");
    let store = Store::new(via_proxy(s, &proxy, &prefix, 2));
    let data = Bytes::from(noise(20 * 1024 * 1024 + 5, 4));
    let err = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect_err("resets must fail the put");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(
        proxy.connections() <= 64,
        "{} connections",
        proxy.connections()
    );
    nothing_stored(s, &prefix, &key_of(&data)).await;
    // Small puts too (single PUT).
    let small = noise(3 << 20, 5);
    let err = store
        .put_bytes(small.clone(), &PutOptions::default())
        .await
        .expect_err("reset single put");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    nothing_stored(s, &prefix, &key_of(&small)).await;

    proxy.set(Fault::Pass);
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put once the network heals");
    assert!(put.stored);
    let got = direct(s, &prefix).await;
    let back = Store::new(got)
        .get(&addr(&sha512_sri(&data)))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("verified");
    assert_eq!(back, data);
}

/// One reset in the middle of an upload, then a healthy network: the retry succeeds.
pub async fn single_reset_is_retried(s: &Server) {
    let proxy = Proxy::start(upstream(s), vec![Fault::ResetAfter(200_000)], Fault::Pass).await;
    let prefix = Server::fresh_prefix("reset1");
    let store = Store::new(via_proxy(s, &proxy, &prefix, 3));
    let data = noise(1_000_000, 6);
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("retried after a reset");
    assert!(put.stored);
    assert!(proxy.connections() >= 2);
}

/// A stock client (boto3, pinned, from `backends/s3/install-boto3.sh`) reads objects tarvault
/// wrote, single-PUT and multipart, and gets identical bytes and the recorded sha1; then it plants
/// wrong bytes under an address, and tarvault refuses them.
pub async fn boto3_interop(s: &Server) {
    let Ok(python) = std::env::var("TARVAULT_BOTO3_PYTHON") else {
        crate::common::skip_or_fail(
            "TARVAULT_BOTO3_PYTHON is not set, so boto3 is not available for the interop test \
             (backends/s3/install-boto3.sh prints it; `bash .ci/run` sets it)",
        );
        return;
    };
    let prefix = Server::fresh_prefix("boto3");
    let backend = direct(s, &prefix).await;
    let store = Store::new(backend.clone());
    let corpus = crate::common::corpus();
    let tarball = crate::common::corpus_bytes(&corpus[0]);
    let big = noise(17 * 1024 * 1024 + 3, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, data) in [tarball.to_vec(), big].into_iter().enumerate() {
        let put = store
            .put_bytes(data.clone(), &PutOptions::default())
            .await
            .expect("put");
        let key = backend.blob_path(&key_of(&data)).to_string();
        let out = dir.path().join(format!("obj{i}"));
        let run = |script: &str, extra: &[&str]| {
            let o = std::process::Command::new(&python)
                .arg("-c")
                .arg(script)
                .args([
                    s.endpoint(),
                    s.var("AWS_ACCESS_KEY_ID"),
                    s.var("AWS_SECRET_ACCESS_KEY"),
                    s.bucket(),
                    key.clone(),
                ])
                .args(extra)
                .output()
                .expect("run python");
            assert!(
                o.status.success(),
                "boto3 failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let meta = run(BOTO3_GET, &[out.to_str().expect("utf8 path")]);
        let got = std::fs::read(&out).expect("read boto3 output");
        assert!(
            got == data,
            "boto3 read different bytes ({} vs {})",
            got.len(),
            data.len()
        );
        // A small blob carries its digests as metadata. A large one of unknown digest is named by
        // a server-side copy of its staging object, which had none (the digests were not known
        // when its upload started); the alias log has them, as for a put whose sha512 was given.
        if data.len() as u64 <= tarvault::backend::s3::S3Config::new("b", "").multipart_threshold {
            assert!(meta.contains(&put.digests.shasum()), "metadata {meta}");
        } else {
            let by_sha1 = crate::common::addr(&put.digests.shasum());
            assert_eq!(
                store.stat(&by_sha1).await.expect("stat by sha1").key,
                key_of(&data)
            );
        }

        // boto3 plants corrupt bytes under the address: tarvault refuses them.
        let mut bad = data.clone();
        bad[data.len() / 3] ^= 1;
        let planted = dir.path().join(format!("bad{i}"));
        std::fs::write(&planted, &bad).expect("write");
        run(BOTO3_PUT, &[planted.to_str().expect("utf8 path")]);
        let err = store
            .get(&put.digests.integrity())
            .await
            .expect("opens")
            .bytes()
            .await
            .expect_err("planted bytes must be refused");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
}

const BOTO3_GET: &str = r#"
import sys, json, boto3
from botocore.config import Config
endpoint, ak, sk, bucket, key, out = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
    region_name="us-east-1", config=Config(s3={"addressing_style": "path"},
    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
r = s3.get_object(Bucket=bucket, Key=key)
open(out, "wb").write(r["Body"].read())
print(json.dumps(r["Metadata"]))
"#;

const BOTO3_PUT: &str = r#"
import sys, boto3
from botocore.config import Config
endpoint, ak, sk, bucket, key, src = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
    region_name="us-east-1", config=Config(s3={"addressing_style": "path"},
    request_checksum_calculation="when_required", response_checksum_validation="when_required"))
s3.put_object(Bucket=bucket, Key=key, Body=open(src, "rb").read())
"#;

/// The CLI reaches the backend through `--store s3://bucket/prefix` and the `AWS_*` environment:
/// put a corpus tarball, get it back byte for byte, stat it by its shasum.
pub async fn cli_store_url(s: &Server) {
    #[cfg(feature = "cli")]
    {
        let bin = env!("CARGO_BIN_EXE_tarvault");
        let prefix = Server::fresh_prefix("cli");
        let url = format!("s3://{}/{prefix}", s.bucket());
        let corpus = crate::common::corpus();
        let e = &corpus[1];
        let data = crate::common::corpus_bytes(e);
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("in.tgz");
        std::fs::write(&src, &data).expect("write");
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(bin);
            cmd.arg("--store").arg(&url).args(args);
            for k in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ALLOW_HTTP",
            ] {
                cmd.env(k, s.var(k));
            }
            let o = cmd.output().expect("run tarvault");
            assert!(
                o.status.success(),
                "tarvault {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        };
        run(&[
            "put",
            "--expect",
            &e.registry_integrity,
            src.to_str().expect("utf8"),
        ]);
        let out = dir.path().join("out.tgz");
        run(&[
            "get",
            &e.registry_integrity,
            "-o",
            out.to_str().expect("utf8"),
        ]);
        assert!(
            std::fs::read(&out).expect("read") == data[..],
            "different bytes"
        );
        let stat = String::from_utf8(run(&["stat", &e.registry_shasum])).expect("utf8");
        assert!(stat.contains(&e.registry_integrity), "{stat}");
    }
    #[cfg(not(feature = "cli"))]
    let _ = s;
}

/// A create-only blob PUT whose answer is lost (the connection closes as the server answers) is
/// sent again and answered 412: the first attempt stored the blob, so the put reports it stored,
/// not already present.
pub async fn put_whose_answer_is_lost_reports_stored(s: &Server) {
    use crate::common::request_proxy::{host_of, Fault, Proxy};
    let proxy = Proxy::start(host_of(&s.endpoint())).await;
    let prefix = Server::fresh_prefix("replay");
    let mut c = s.config(&prefix);
    c.endpoint = Some(proxy.url());
    // A connection per request, so that the blob PUT is the first request of its connection
    // whatever the client's pool holds, and the proxy picks it by its request line.
    proxy.one_request_per_connection();
    let backend = S3Backend::with_store_config(Arc::new(c.build().expect("client")), &c);
    proxy.once(
        &format!("PUT /{}/{prefix}/blobs/", s.bucket()),
        Fault::DropResponse,
    );
    let data = noise(3000, 21);
    let store = Store::new(backend.clone());
    let put = store
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        proxy.rules_left(),
        0,
        "the first put's blob PUT lost its answer"
    );
    let key = key_of(&data);
    assert!(direct(s, &prefix)
        .await
        .head(&key)
        .await
        .expect("head")
        .is_some());
    assert!(put.stored, "this put stored the new blob");
    let back = crate::common::read_verified(&store, &put.digests.integrity()).await;
    assert_eq!(&back[..], &data[..]);
    let again = store
        .put_bytes(data, &PutOptions::default())
        .await
        .expect("put again");
    assert!(!again.stored, "a blob already there is a dedupe hit");
}
