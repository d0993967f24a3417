//! Hardening of storage rows and admin parameters (issue 10, items 6 and 12), through real
//! servers on port 0, on SQLite and on Postgres when `TANDEM_TEST_DATABASE_URL` is set:
//!
//! - rows for nothing: joining (read-only tokens, anonymous open-mode clients, a read-only
//!   client that even sends an update) stores no document row; the first accepted change
//!   stores exactly one; admin GET / DELETE of a name never written answer 404 and leave no
//!   tombstone, while a written-then-deleted name stays tombstoned (410);
//! - times with UTC offsets pick the version at that instant in `state?at=`, `diff?from_at=` /
//!   `to_at=` and a restore's `at`; times far in the future answer 400 (they made the Postgres
//!   backend panic) instead of a panic;
//! - integer parameters below their minimum (`timeline?after=-1`, `before=-1`, ...) answer 400
//!   with a reason.

mod common;

use common::on_every_db;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Db, HttpResponse, TestServer, config, frame, http_send, text_update};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tandem::Config;
use tandem::config::AuthMode;

const SECRET: &str = "tandem-hardening-admin-hs256-secret-98765";
const ADMIN_TOKEN: &str = "admin-bearer-for-hardening-admin-5d1e";
const API: &str = "/api/v1/admin";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn base_config(db: &Db, auth: AuthMode) -> Config {
    let mut c = config();
    c.database_url = Some(db.url.clone());
    c.auth = auth;
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN_TOKEN.into());
    c.max_messages_per_sec = 1_000_000;
    c.message_burst = 1_000_000;
    c
}

fn token(access: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let claims = json!({
        "sub": format!("user-{access}"), "docs": ["*"], "access": access,
        "exp": now() + 3600, "jti": format!("h{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn enc(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    let bytes = match body {
        Some(v) => {
            headers.push(("Content-Type", "application/json"));
            serde_json::to_vec(v).expect("json")
        }
        None => Vec::new(),
    };
    http_send(addr, method, path, &headers, &bytes).await
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&r.body)))
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = admin(addr, "GET", path, None).await;
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    json_of(&r)
}

/// Asserts a JSON 400 whose reason mentions `needle`.
fn assert_400(r: &HttpResponse, needle: &str, what: &str) {
    let v = json_of(r);
    assert_eq!(r.status, 400, "{what}: {v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(needle),
        "{what}: reason {reason:?} lacks {needle:?}"
    );
}

/// Names of the live documents the database holds.
async fn stored_names(db: &Db) -> Vec<String> {
    let store = db.store().await;
    store
        .list_documents(None, None, 10_000)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rows for nothing

#[tokio::test]
async fn joining_stores_nothing_and_the_first_change_stores_one_document() {
    on_every_db!(
        "joining_stores_nothing_and_the_first_change_stores_one_document",
        rows_case
    );
}

async fn rows_case(db: &Db) {
    // 200 distinct names joined with read-only tokens.
    let server = TestServer::start(base_config(db, AuthMode::Token)).await;
    let ro = token("ro");
    for i in 0..200 {
        let c = Client::join(&format!("ws://{}/scan/ro-{i}?token={ro}", server.addr)).await;
        drop(c);
    }
    // A read-only client that sends an update: refused, so still nothing to store.
    let mut reader = Client::join(&format!("ws://{}/scan/ro-writes?token={ro}", server.addr)).await;
    reader
        .send_raw(frame(0, Some(2), &text_update("text", "nope")))
        .await;
    server
        .wait_metric("tandem_readonly_updates_refused_total", "", 1.0)
        .await;
    let listed = get_json(server.addr, &format!("{API}/documents?limit=1000")).await;
    assert_eq!(listed["documents"], json!([]), "{}", db.label);
    assert!(stored_names(db).await.is_empty(), "{}", db.label);

    // Admin reads and deletes of a name only ever opened: 404, and no tombstone appears.
    for method in ["GET", "DELETE"] {
        let r = admin(
            server.addr,
            method,
            &format!("{API}/documents/{}", enc("scan/ro-7")),
            None,
        )
        .await;
        assert_eq!(
            r.status,
            404,
            "{method}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let store = db.store().await;
    assert_eq!(store.document("scan/ro-7").await.expect("doc"), None);
    assert!(store.deleted_documents().await.expect("deleted").is_empty());
    server.stop().await;

    // 200 anonymous joins in open mode.
    let server = TestServer::start(base_config(db, AuthMode::Open)).await;
    for i in 0..200 {
        let c = Client::join(&server.url(&format!("scan/anon-{i}"))).await;
        drop(c);
    }
    assert!(stored_names(db).await.is_empty(), "{}", db.label);

    // One write: exactly one document, created by it.
    let mut writer = Client::join(&server.url("scan/anon-7")).await;
    writer.insert("text", 0, "first").await;
    writer.pump_until(|c| c.updates_received == 1).await;
    assert_eq!(stored_names(db).await, ["scan/anon-7"], "{}", db.label);
    let d = get_json(
        server.addr,
        &format!("{API}/documents/{}", enc("scan/anon-7")),
    )
    .await;
    assert_eq!(
        (d["last_seq"].as_i64(), d["log_rows"].as_i64()),
        (Some(1), Some(1))
    );
    // The name that was DELETEd while never written is an ordinary name: it can be written.
    let mut later = Client::join(&server.url("scan/ro-7")).await;
    later.insert("text", 0, "later").await;
    later.pump_until(|c| c.updates_received == 1).await;

    // Written, then deleted: the tombstone stays (README), and the name is refused.
    let r = admin(
        server.addr,
        "DELETE",
        &format!("{API}/documents/{}", enc("scan/anon-7")),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = admin(
        server.addr,
        "GET",
        &format!("{API}/documents/{}", enc("scan/anon-7")),
        None,
    )
    .await;
    assert_eq!(r.status, 410);
    let store = db.store().await;
    assert_eq!(
        store.deleted_documents().await.expect("deleted"),
        ["scan/anon-7"]
    );
    assert_eq!(stored_names(db).await, ["scan/ro-7"], "{}", db.label);
    server.stop().await;

    // After a restart, still one live document and one tombstone; reading names stores none.
    let server = TestServer::start(base_config(db, AuthMode::Open)).await;
    let again = Client::join(&server.url("scan/ro-7")).await;
    assert_eq!(again.text("text"), "later");
    let fresh = Client::join(&server.url("scan/after-restart")).await;
    drop(fresh);
    assert_eq!(stored_names(db).await, ["scan/ro-7"], "{}", db.label);
    server.stop().await;
}

#[tokio::test]
async fn an_import_creates_the_document_an_empty_one_does_not() {
    on_every_db!(
        "an_import_creates_the_document_an_empty_one_does_not",
        import_case
    );
}

async fn import_case(db: &Db) {
    let server = TestServer::start(base_config(db, AuthMode::Open)).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    // An update that changes nothing (an empty document's state) stores nothing.
    let empty = yrs::Doc::new();
    let nothing = {
        use yrs::{ReadTxn, StateVector, Transact};
        empty
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let path = format!("{API}/documents/{}/import", enc("imported"));
    let r = http_send(server.addr, "POST", &path, &headers, &nothing).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["changed"], false);
    assert!(stored_names(db).await.is_empty(), "{}", db.label);
    let r = http_send(
        server.addr,
        "POST",
        &path,
        &headers,
        &text_update("text", "imported"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["seq"], 1);
    assert_eq!(stored_names(db).await, ["imported"], "{}", db.label);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Times

/// Days → (year, month, day) (H. Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Unix milliseconds as RFC 3339 in the zone `offset_minutes` east of UTC.
fn rfc3339_at(ms: i64, offset_minutes: i64) -> String {
    let local = ms + offset_minutes * 60_000;
    let (secs, millis) = (local.div_euclid(1000), local.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil(days);
    let zone = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes > 0 { '+' } else { '-' };
        let m = offset_minutes.abs();
        format!("{sign}{:02}:{:02}", m / 60, m % 60)
    };
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}{zone}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Unix milliseconds of an API time (`...Z` with milliseconds).
fn api_ms(time: &str) -> i64 {
    let t = humantime::parse_rfc3339(time).expect("API time");
    i64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("ms")
}

#[tokio::test]
async fn times_with_utc_offsets_pick_the_version_at_that_instant() {
    on_every_db!(
        "times_with_utc_offsets_pick_the_version_at_that_instant",
        offsets_case
    );
}

async fn offsets_case(db: &Db) {
    let server = TestServer::start(base_config(db, AuthMode::Open)).await;
    let name = "timed/doc";
    let mut c = Client::join(&server.url(name)).await;
    for (i, s) in ["one ", "two ", "three "].iter().enumerate() {
        c.insert("text", 0, s).await;
        c.pump_until(|c| c.updates_received == i + 1).await;
        // Distinct milliseconds, so each change has a time of its own.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let doc = format!("{API}/documents/{}", enc(name));
    let timeline = get_json(server.addr, &format!("{doc}/timeline")).await;
    let times: Vec<i64> = timeline["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| api_ms(c["time"].as_str().expect("time")))
        .collect();
    assert_eq!(times.len(), 3, "{timeline}");
    assert!(times[0] < times[1] && times[1] < times[2], "{times:?}");

    // state?at= with the instant of change 2 in three zones: always version 2.
    for offset in [120, -330, 0, 345] {
        let at = rfc3339_at(times[1], offset);
        let v = get_json(server.addr, &format!("{doc}/state?at={}", enc(&at))).await;
        assert_eq!(v["seq"], 2, "state at {at} ({}): {v}", db.label);
    }
    // Just before change 2, expressed with an offset: version 1.
    let before = rfc3339_at(times[1] - 1, -300);
    let v = get_json(server.addr, &format!("{doc}/state?at={}", enc(&before))).await;
    assert_eq!(v["seq"], 1, "state at {before}: {v}");

    // diff?from_at=&to_at= with offsets.
    let from = rfc3339_at(times[0], -330);
    let to = rfc3339_at(times[1], 120);
    let v = get_json(
        server.addr,
        &format!("{doc}/diff?from_at={}&to_at={}", enc(&from), enc(&to)),
    )
    .await;
    assert_eq!(
        (v["from"].as_i64(), v["to"].as_i64()),
        (Some(1), Some(2)),
        "{v}"
    );

    // A restore by time with an offset restores that version.
    let at = rfc3339_at(times[0], 330);
    let r = admin(
        server.addr,
        "POST",
        &format!("{doc}/restore"),
        Some(&json!({ "at": at })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json_of(&r);
    assert_eq!(v["restored_to"], 1, "restore at {at}: {v}");
    assert_eq!(v["changed"], true);
    let state = get_json(server.addr, &format!("{doc}/state")).await;
    assert_eq!(state["seq"], 4);
    assert_eq!(state["content"]["text"]["value"], "one ", "{state}");
    // A label at the restored state can still be named by time, and the clients converge.
    c.pump_until(|c| c.text("text") == "one ").await;

    // Times out of range: 400 with a reason, never a panic, on every backend.
    for far in [
        "99999999999999999",
        "18446744073709551615",
        "9999-12-31T23:59:59-23:59",
        "+10000-01-01T00:00:00Z",
    ] {
        let r = admin(
            server.addr,
            "GET",
            &format!("{doc}/state?at={}", enc(far)),
            None,
        )
        .await;
        assert_400(&r, "time", far);
        let r = admin(
            server.addr,
            "GET",
            &format!("{doc}/diff?from=0&to_at={}", enc(far)),
            None,
        )
        .await;
        assert_400(&r, "time", far);
        let r = admin(
            server.addr,
            "POST",
            &format!("{doc}/restore"),
            Some(&json!({ "at": far })),
        )
        .await;
        assert_400(&r, "time", far);
    }
    // The latest time accepted is fine: the newest version.
    let v = get_json(
        server.addr,
        &format!("{doc}/state?at={}", enc("9999-12-31T23:59:59.999Z")),
    )
    .await;
    assert_eq!(v["seq"], 4);
    let (status, _) = server.http_get("/healthz").await;
    assert_eq!(status, 200, "the server is still up");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Integer parameters

#[tokio::test]
async fn integer_parameters_below_their_minimum_are_refused() {
    on_every_db!(
        "integer_parameters_below_their_minimum_are_refused",
        parameters_case
    );
}

async fn parameters_case(db: &Db) {
    let server = TestServer::start(base_config(db, AuthMode::Open)).await;
    let name = "params";
    let mut c = Client::join(&server.url(name)).await;
    c.insert("text", 0, "x").await;
    c.pump_until(|c| c.updates_received == 1).await;
    let doc = format!("{API}/documents/{name}");
    let gets = [
        (format!("{doc}/timeline?after=-1"), "after"),
        (format!("{doc}/timeline?order=desc&before=-1"), "before"),
        (format!("{doc}/timeline?before=-5"), "before"),
        (format!("{doc}/timeline?limit=-1"), "limit"),
        (format!("{doc}/timeline?gap=-1"), "gap"),
        (format!("{doc}/state?seq=-1"), "seq"),
        (format!("{doc}/diff?from=-1"), "seq"),
        (format!("{doc}/diff?from=0&to=-2"), "seq"),
        (format!("{API}/documents?limit=-1"), "limit"),
    ];
    for (path, needle) in &gets {
        let r = admin(server.addr, "GET", path, None).await;
        assert_400(&r, needle, path);
    }
    let posts = [
        (format!("{doc}/restore"), json!({ "seq": -1 }), "seq"),
        (
            format!("{doc}/labels"),
            json!({ "name": "v", "seq": -1 }),
            "seq",
        ),
    ];
    for (path, body, needle) in &posts {
        let r = admin(server.addr, "POST", path, Some(body)).await;
        assert_400(&r, needle, path);
    }
    // Every refusal is counted, by status.
    server
        .wait_metric(
            "tandem_admin_requests_refused_total",
            "status=\"400\"",
            (gets.len() + posts.len()) as f64,
        )
        .await;
    // The minimum itself is fine: after=0 lists everything, before=0 nothing.
    let v = get_json(server.addr, &format!("{doc}/timeline?after=0")).await;
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(1));
    let v = get_json(server.addr, &format!("{doc}/timeline?order=desc&before=0")).await;
    assert_eq!(v["changes"], json!([]));
    server.stop().await;
}
