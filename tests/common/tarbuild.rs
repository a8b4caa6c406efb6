//! A tiny tar writer that can produce broken archives, and gzip: for hostile-tarball tests.
#![allow(dead_code)]

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

pub const BLOCK: usize = 512;

/// A ustar header for `name` (must fit in 100 bytes), with a valid checksum.
pub fn header(name: &str, typeflag: u8, size: u64, link: &str) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..265].copy_from_slice(b"ustar\x0000");
    set_checksum(&mut h);
    h
}

/// Recomputes the header checksum after editing a header.
pub fn set_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Builds a tar stream entry by entry.
#[derive(Default)]
pub struct Tar {
    pub buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header block and `data` padded to a block boundary.
    pub fn raw(&mut self, header: [u8; BLOCK], data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn entry(&mut self, name: &str, typeflag: u8, data: &[u8], link: &str) -> &mut Self {
        self.raw(header(name, typeflag, data.len() as u64, link), data)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, b'0', data, "")
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, b'5', b"", "")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', b"", target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'1', b"", target)
    }

    /// A pax extended header (`x`, or `g` when `global`) with `records`.
    pub fn pax(&mut self, records: &[(&str, &str)], global: bool) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while format!("{len}").len() + rest.len() != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        let flag = if global { b'g' } else { b'x' };
        self.entry("PaxHeader/x", flag, &body.clone(), "")
    }

    /// A GNU long-name (`L`) or long-link (`K`) entry.
    pub fn gnu_long(&mut self, flag: u8, value: &str) -> &mut Self {
        let mut body = value.as_bytes().to_vec();
        body.push(0);
        self.entry("././@LongLink", flag, &body, "")
    }

    pub fn package_json(&mut self, name: &str, version: &str) -> &mut Self {
        let json = format!(r#"{{"name":"{name}","version":"{version}"}}"#);
        self.file("package/package.json", json.as_bytes())
    }

    /// The archive with its two-zero-block end marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A valid package with a manifest, after which `extra` adds entries.
pub fn package_with(extra: impl FnOnce(&mut Tar)) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("package/").package_json("demo", "1.0.0");
    extra(&mut tar);
    gzip(&tar.finish())
}
