//! Postgres over TLS (issue 16, item 1): `sslmode=require`, `verify-ca` and `verify-full`
//! against the machine's Postgres behind a TLS-terminating proxy whose certificates are made
//! here. Skipped without TANDEM_TEST_DATABASE_URL.

use std::time::Duration;

use crdt_store::{Store, StoreOptions};
use testkit::pg_tls::{PgTlsProxy, TestPki};
use testkit::{PgSchema, upstream_addr, with_host_port};

/// `url` pointed at `host:port` of the proxy, with the TLS parameters `tls` added.
fn tls_url(schema: &PgSchema, host: &str, port: u16, tls: &str) -> String {
    let url = with_host_port(&schema.url, ([127, 0, 0, 1], port).into());
    let url = url.replacen(&format!("127.0.0.1:{port}"), &format!("{host}:{port}"), 1);
    format!("{url}&{tls}")
}

async fn open(url: &str) -> Result<Store, String> {
    let opts = StoreOptions {
        connect_timeout: Duration::from_secs(10),
        ..StoreOptions::default()
    };
    let store = Store::open(url, &opts).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())?;
    Ok(store)
}

// Multi-threaded: the proxy must keep running while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_tls_postgres() {
    let Some(schema) = PgSchema::for_test("sslmodes_against_a_tls_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The server certificate names `localhost` only, so 127.0.0.1 is a wrong host name.
    let pki = TestPki::new(&["localhost"]);
    let other = TestPki::new(&["localhost"]);
    let root = pki.write_ca(dir.path(), "root.pem");
    let wrong_root = other.write_ca(dir.path(), "other-root.pem");
    let proxy = PgTlsProxy::start(upstream_addr(&schema.admin_url), &pki).await;
    let port = proxy.addr.port();
    let root = root.display();
    let wrong_root = wrong_root.display();

    // require: encrypted, certificate not checked (libpq's meaning).
    open(&tls_url(&schema, "127.0.0.1", port, "sslmode=require"))
        .await
        .expect("sslmode=require through a TLS proxy");

    // verify-ca: the chain is checked against the given root; the host name is not.
    let ok = tls_url(
        &schema,
        "127.0.0.1",
        port,
        &format!("sslmode=verify-ca&sslrootcert={root}"),
    );
    open(&ok).await.expect("verify-ca with the right root");
    let bad = tls_url(
        &schema,
        "127.0.0.1",
        port,
        &format!("sslmode=verify-ca&sslrootcert={wrong_root}"),
    );
    let err = open(&bad)
        .await
        .expect_err("verify-ca with a wrong root must fail");
    println!("verify-ca, wrong root: {err}");
    assert!(
        err.contains("UnknownIssuer") && err.contains("sslrootcert="),
        "the error says what is wrong: {err}"
    );
    // Without sslrootcert the system's roots are used, and they do not know the test CA.
    let system = tls_url(&schema, "localhost", port, "sslmode=verify-full");
    let err = open(&system)
        .await
        .expect_err("a test CA is not a system root");
    println!("verify-full, system roots: {err}");

    // verify-full: chain and host name.
    let ok = tls_url(
        &schema,
        "localhost",
        port,
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    open(&ok)
        .await
        .expect("verify-full with the right root and host");
    let bad = tls_url(
        &schema,
        "127.0.0.1",
        port,
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let err = open(&bad)
        .await
        .expect_err("verify-full with a wrong host name must fail");
    println!("verify-full, wrong host: {err}");
    assert!(
        err.contains("NotValidForName") || err.to_lowercase().contains("name"),
        "the error names the host name problem: {err}"
    );

    // The binary takes the same URLs (`tandem migrate`).
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["migrate", "--database-url", &ok])
        .status()
        .expect("run tandem migrate");
    assert!(status.success(), "tandem migrate over verify-full");

    drop(proxy);
    schema.remove().await;
}
