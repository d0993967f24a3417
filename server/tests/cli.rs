//! The `tandem` binary's command line: `migrate`, start-up failures, `--help`.

use std::process::Command;

fn tandem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.env("NO_COLOR", "1").env_remove("DATABASE_URL");
    c
}

#[tokio::test]
async fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/m.db", dir.path().display());
    // Options work after the subcommand as well as before it.
    for args in [
        vec!["migrate", "--database-url", &url],
        vec!["--database-url", &url, "migrate"],
    ] {
        let out = tandem().args(&args).output().expect("run tandem");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = crdt_store::Store::open(&url, &crdt_store::StoreOptions::default())
        .await
        .expect("open");
    assert!(
        store
            .revocations()
            .await
            .expect("schema is there")
            .is_empty()
    );
}

#[test]
fn an_unreachable_or_invalid_database_is_a_clear_error_and_a_nonzero_exit() {
    for (url, says) in [
        (
            "postgres://postgres@127.0.0.1:1/nothing",
            "database unavailable",
        ),
        ("mysql://nope", "unsupported scheme"),
    ] {
        let out = tandem()
            .args(["--addr", "127.0.0.1:0", "--database-url", url])
            .output()
            .expect("run tandem");
        assert_eq!(out.status.code(), Some(1), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(
            !stderr.contains("listening on"),
            "{url}: it must not start serving"
        );
    }
}

#[test]
fn token_mode_without_a_key_refuses_to_start() {
    let out = tandem()
        .args([
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "memory",
            "--auth",
            "token",
        ])
        .output()
        .expect("run tandem");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
}
