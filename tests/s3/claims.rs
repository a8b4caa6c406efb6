//! A stand-in S3 server whose answers claim more than any alias marker or segment can hold: the
//! backend refuses them by their `Content-Length`, with an error naming the object, rather than
//! reserving the claimed size (object_store's `GetResult::bytes` does, and a claim of 2^62 bytes
//! aborted the process). No real server is needed.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::backend::Backend;
use tarvault::integrity::{Algorithm, Hash};
use tarvault::ErrorKind;
use tokio::io::AsyncWriteExt;

use crate::common::request_proxy::read_head;

/// 2^62: more memory than any machine has.
pub const HUGE: u64 = 1 << 62;

/// What the stand-in answers for the alias segments' folder.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// No segments (the marker is what is read).
    Empty,
    /// One segment, listed and served with a [`HUGE`] length (markers are all missing).
    HugeSegment,
}

/// Serves on a loopback port until the test ends; returns its endpoint.
pub async fn lying_server(log: Log) -> String {
    let (listener, at) = crate::common::loopback().await;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(answer(sock, log));
        }
    });
    format!("http://{at}")
}

async fn answer(mut sock: tokio::net::TcpStream, log: Log) {
    let Ok(Some(head)) = read_head(&mut sock).await else {
        return;
    };
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    let xml = |status: &str, body: String| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let huge = target.contains("/markers/") && log == Log::Empty
        || target.contains("/alias/log/seg") && log == Log::HugeSegment;
    let reply = if huge {
        // Two pieces, so that object_store's collect_bytes (which keeps a lone chunk as it is)
        // reserves the claimed length for the rest; the connection then stays open.
        let first = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\nETag: \"x\"\r\n\
             Last-Modified: Wed, 01 Jan 2020 00:00:00 GMT\r\n\r\nv1"
        );
        let _ = sock.write_all(first.as_bytes()).await;
        let _ = sock.flush().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = sock.write_all(b" x").await;
        let _ = sock.flush().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    } else if target.contains("list-type=2") && log == Log::HugeSegment {
        xml(
            "200 OK",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                 <ListBucketResult><Name>bucket</Name><KeyCount>1</KeyCount>\
                 <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents>\
                 <Key>p/alias/log/seg1</Key><LastModified>2020-01-01T00:00:00.000Z</LastModified>\
                 <ETag>\"x\"</ETag><Size>{HUGE}</Size></Contents></ListBucketResult>"
            ),
        )
    } else if target.contains("list-type=2") {
        xml(
            "200 OK",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name>\
             <KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
             </ListBucketResult>"
                .into(),
        )
    } else {
        xml(
            "404 Not Found",
            "<Error><Code>NoSuchKey</Code><Message>no</Message></Error>".into(),
        )
    };
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A backend on the stand-in, without retries.
pub fn backend(endpoint: String) -> S3Backend {
    let mut c = S3Config::new("bucket", "p");
    c.endpoint = Some(endpoint);
    c.allow_http = Some(true);
    c.region = Some("us-east-1".into());
    c.credentials = Some(("key".into(), "secret".into()));
    c.max_retries = 0;
    S3Backend::with_store_config(Arc::new(c.build().expect("client")), &c)
}

/// Resolves a sha1 through the stand-in: an error naming `object` and the claimed size, at once.
pub async fn resolve_fails_naming(log: Log, object: &str) {
    let b = backend(lying_server(log).await);
    let h = Hash::from_hex(Algorithm::Sha1, &"ab".repeat(20)).expect("hash");
    let got = tokio::time::timeout(Duration::from_secs(20), b.resolve_alias(&h))
        .await
        .expect("the lookup was still pending after 20 s");
    let err = got.expect_err("a claim of 2^62 bytes must be refused");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let text = err.to_string();
    assert!(text.contains(object), "{text}");
    assert!(text.contains(&HUGE.to_string()), "{text}");
}
