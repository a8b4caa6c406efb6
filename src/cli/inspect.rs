//! `tarvault inspect`: vet an npm package tarball without storing it.

use std::path::Path;

use serde::Serialize;
use tarvault::tarball::{inspect_stream, Policy, Report, TarballError};
use tarvault::{Error, ErrorReport};

use super::exit;
use super::output::{json_line, outln};

#[derive(Serialize)]
struct Verdict<'a> {
    file: String,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    report: Option<&'a Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub(crate) async fn run(file: &Path, json: bool) -> Result<u8, Error> {
    let name = file.display().to_string();
    let result = if file.as_os_str() == "-" {
        let input = tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024);
        inspect_stream(input, Policy::default()).await
    } else {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|source| Error::Io {
                op: "open",
                path: file.to_path_buf(),
                source,
            })?;
        let input = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024);
        inspect_stream(input, Policy::default()).await
    };
    match result {
        Ok(report) => {
            if json {
                json_line(&Verdict {
                    file: name,
                    verdict: "accepted",
                    report: Some(&report),
                    kind: None,
                    reason: None,
                });
            } else {
                outln!(
                    "accepted {}@{} ({} entries, {} bytes unpacked, root {}/)",
                    report.name,
                    report.version,
                    report.entry_count,
                    report.unpacked_size,
                    report.root
                );
                for w in &report.warnings {
                    outln!("warning: {w}");
                }
            }
            Ok(exit::OK)
        }
        Err(TarballError::Io(e)) => Err(Error::Input {
            what: if file.as_os_str() == "-" {
                "standard input".into()
            } else {
                name
            },
            source: std::io::Error::new(e.kind(), e),
        }),
        Err(e) => {
            if json {
                json_line(&Verdict {
                    file: name.clone(),
                    verdict: "rejected",
                    report: None,
                    kind: Some(e.kind().as_str()),
                    reason: Some(ErrorReport::new(&e).to_string()),
                });
            }
            eprintln!("tarvault: rejected {name}: {}", ErrorReport::new(&e));
            Ok(exit::REJECTED)
        }
    }
}
