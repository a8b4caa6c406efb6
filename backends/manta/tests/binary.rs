//! The `manta-test-server` binary: flags, the `listening on` line and
//! `--port-file`.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{Client, Scratch};

#[test]
fn binary_starts_and_serves() {
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let port_file = scratch.dir.path().join("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_manta-test-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "testuser",
            "--fail-503-rate",
            "0",
            "--slow-ms",
            "0",
        ])
        .arg("--root")
        .arg(scratch.root())
        .arg("--pubkey")
        .arg(common::pub_path(&key))
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let port: u16 = std::fs::read_to_string(&port_file)
        .expect("port file")
        .trim()
        .parse()
        .expect("port");
    assert_eq!(line.trim(), format!("listening on http://127.0.0.1:{port}"));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = Client {
        addr: ([127, 0, 0, 1], port).into(),
        signer: Some(
            manta_test_server::sign::Signer::from_file(&key, common::USER).expect("signer"),
        ),
    };
    let r = rt.block_on(client.get("/testuser"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("result-set-size"), Some("4"));
    rt.block_on(client.mkdir("/testuser/stor/bin"));
    assert!(
        scratch.root().join("testuser/stor/bin").is_dir(),
        "data lives under --root"
    );
    let _ = child.kill();
    let _ = child.wait();

    // Bad flags fail fast.
    let out = Command::new(env!("CARGO_BIN_EXE_manta-test-server"))
        .args([
            "--user",
            "testuser",
            "--drop-rate",
            "2",
            "--pubkey",
            "/nonexistent",
        ])
        .arg("--root")
        .arg(scratch.root())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_manta-test-server"))
        .args(["--user", "testuser", "--pubkey", "/nonexistent/key.pub"])
        .arg("--root")
        .arg(scratch.root())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/key.pub"));
}
