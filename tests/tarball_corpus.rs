//! Every tarball in the shared corpus must yield npm's own numbers.

mod common;

use common::corpus_dir;

use tarvault::tarball::{inspect_reader, Inspector, Policy};

#[derive(serde::Deserialize)]
struct Row {
    name: String,
    version: String,
    file: String,
    entry_count: u64,
    unpacked_size: u64,
}

fn rows() -> Vec<Row> {
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("manifest.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn corpus_matches_npm_numbers() {
    let dir = corpus_dir();
    let rows = rows();
    assert!(!rows.is_empty());
    let mut failures = Vec::new();
    for row in &rows {
        let file = std::fs::File::open(dir.join(&row.file)).unwrap();
        match inspect_reader(std::io::BufReader::new(file), Policy::default()) {
            Ok(r) => {
                let got = (&r.name[..], &r.version[..], r.entry_count, r.unpacked_size);
                let want = (
                    &row.name[..],
                    &row.version[..],
                    row.entry_count,
                    row.unpacked_size,
                );
                if got != want {
                    failures.push(format!("{}: got {got:?}, want {want:?}", row.file));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", row.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} mismatched:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn chunk_sizes_do_not_change_the_report() {
    let dir = corpus_dir();
    // A few small tarballs keep the 1-byte pass quick.
    let mut rows = rows();
    rows.sort_by_key(|r| {
        std::fs::metadata(dir.join(&r.file))
            .map(|m| m.len())
            .unwrap_or(0)
    });
    for row in rows.iter().take(4) {
        let bytes = std::fs::read(dir.join(&row.file)).unwrap();
        let whole = {
            let mut i = Inspector::new(Policy::default());
            i.update(&bytes).unwrap();
            i.finish().unwrap()
        };
        for size in [1usize, 7, 512] {
            let mut i = Inspector::new(Policy::default());
            for chunk in bytes.chunks(size) {
                i.update(chunk).unwrap();
            }
            assert_eq!(
                i.finish().unwrap(),
                whole,
                "{} in {size}-byte chunks",
                row.file
            );
        }
    }
}

#[test]
fn stream_and_reader_agree() {
    let dir = corpus_dir();
    let row = &rows()[0];
    let bytes = std::fs::read(dir.join(&row.file)).unwrap();
    let chunks: Vec<std::io::Result<bytes::Bytes>> = bytes
        .chunks(4096)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let streamed = rt
        .block_on(tarvault::tarball::inspect_stream(
            futures::stream::iter(chunks),
            Policy::default(),
        ))
        .unwrap();
    let read = inspect_reader(&bytes[..], Policy::default()).unwrap();
    assert_eq!(streamed, read);
    assert_eq!(streamed.name, row.name);
}
