//! The admin API as its OpenAPI document describes it: the document is served without a
//! token, every documented operation needs the admin token (and is off without one), methods
//! a documented path does not document get 405, the conformance check rejects answers that do
//! not match, and the router answers without TCP.
//!
//! Every test runs on SQLite, and on Postgres when `TANDEM_TEST_DATABASE_URL` is set (each in
//! a schema of its own); without it the Postgres part prints that it is skipped. Every JSON
//! answer is validated against the generated OpenAPI document (see tests/common/admin.rs).

mod common;

use common::admin::*;

// ---------------------------------------------------------------------------------------------
// The bearer token, on every documented operation

/// A documented operation.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    /// The path template, `{name}` and `{label}` included.
    template: String,
    id: String,
    /// Whether it needs the admin token (`security: []` opts out).
    secured: bool,
    /// `application/json`, `application/octet-stream` or none.
    body: Option<String>,
}

impl Operation {
    fn path(&self, name: &str) -> String {
        self.template
            .replace("{name}", &enc(name))
            .replace("{label}", "v1")
    }

    /// A plausible body for the operation.
    fn body<'a>(&self, json_body: &'a Value, bytes: &'a [u8]) -> Body<'a> {
        match self.body.as_deref() {
            Some("application/json") => Body::Json(json_body),
            Some(_) => Body::Bytes(bytes),
            None => Body::None,
        }
    }
}

/// Every operation of the OpenAPI document.
fn operations(openapi: &Value) -> Vec<Operation> {
    let global_secured = openapi["security"]
        .as_array()
        .is_some_and(|s| !s.is_empty());
    let mut ops = Vec::new();
    for (template, item) in openapi["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            // The admin token's scheme; the document API has its own (documentToken).
            let secured = match op.get("security") {
                Some(s) => s
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("bearerAuth").is_some())),
                None => global_secured,
            };
            let document_api = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("documentToken").is_some()));
            if document_api {
                assert!(
                    template.starts_with("/api/v1/documents")
                        || template.starts_with("/api/v1/events"),
                    "{template}"
                );
                continue;
            }
            let body = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned());
            ops.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                id: op["operationId"].as_str().expect("operationId").to_string(),
                secured,
                body,
            });
        }
    }
    ops
}

/// The OpenAPI document as served (no token needed).
async fn served_openapi(server: &TestServer) -> Value {
    let r = http_send(server.addr, "GET", "/api/v1/openapi.json", &[], &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    body_json(&r)
}

#[tokio::test]
async fn every_documented_operation_needs_the_admin_token_and_is_off_without_one() {
    on_every_db!(
        "every_documented_operation_needs_the_admin_token_and_is_off_without_one",
        admin_auth
    );
}

async fn admin_auth(db: &Db) {
    let server = start(db).await;
    let openapi = served_openapi(&server).await;
    // What the binary serves is what the handlers and answer types generate.
    let embedded = tandem::admin::openapi();
    assert_eq!(openapi, embedded);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    let ops = operations(&openapi);
    let ids: BTreeSet<_> = ops.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
    for id in [
        "revoke",
        "liftRevocation",
        "listDocuments",
        "getDocument",
        "deleteDocument",
        "snapshotDocument",
        "disconnectClients",
        "exportDocument",
        "importDocument",
        "getTimeline",
        "getState",
        "getDiff",
        "restoreDocument",
        "listLabels",
        "createLabel",
        "deleteLabel",
    ] {
        assert!(ids.contains(id), "{id} is documented");
    }
    let secured: Vec<_> = ops.iter().filter(|o| o.secured).collect();
    assert!(
        secured.iter().all(|o| o.template.starts_with(API)),
        "{secured:?}"
    );
    assert!(
        ops.iter()
            .filter(|o| !o.secured)
            .all(|o| o.template == "/api/v1/openapi.json"
                || o.template == "/api/v1/documents/{name}/sync/{session}"),
        "only the description itself and a fallback session's POST (its session id \
         authorizes it) are public: {ops:?}"
    );

    let name = "auth/doc";
    let mut alice = join(&server, name, "alice").await;
    write(&mut alice, "protected").await;
    let (status, _) = post(&server, &doc_path(name, "/labels"), &json!({"name": "v1"})).await;
    assert_eq!(status, 201);
    let json_body = json!({"seq": 1, "user": "alice", "name": "v2", "token_id": "t"});
    let update = common::text_update(TEXT, "intruder");
    let wrong = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(ADMIN_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    for op in &secured {
        let path = op.path(name);
        for auth in &wrong {
            let mut headers = Vec::new();
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            let bytes = match op.body(&json_body, &update) {
                Body::Json(v) => {
                    headers.push(("Content-Type", "application/json"));
                    serde_json::to_vec(v).unwrap()
                }
                Body::Bytes(b) => {
                    headers.push(("Content-Type", "application/octet-stream"));
                    b.to_vec()
                }
                _ => Vec::new(),
            };
            let r = http_send(server.addr, &op.method, &path, &headers, &bytes).await;
            let what = format!("{} {} with {auth:?}", op.method, path);
            assert_error(&r, 401, &what);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
            assert_eq!(body_json(&r)["reason"], "missing or invalid admin token");
            check_response(&op.method, &path, 401, &body_json(&r));
        }
    }
    // Nothing an unauthorized request asked for happened: no change, no label made or removed,
    // no deletion, no disconnection or revocation of alice.
    let d = detail(&server, name).await;
    assert_eq!(
        (d["last_seq"].clone(), d["labels"].clone()),
        (json!(1), json!(1)),
        "{d}"
    );
    write(&mut alice, " still").await;
    assert!(alice.closed.is_none());
    assert_eq!(
        root_text(&get_ok(&server, &doc_path(name, "/state")).await),
        "protected still"
    );

    // With the token every documented operation is routed (whatever it answers about a
    // document that does not exist).
    for op in &secured {
        let path = op.path(&format!("fresh/{}", op.id));
        let r = request(
            server.addr,
            &op.method,
            &path,
            Some(ADMIN_TOKEN),
            op.body(&json_body, &update),
        )
        .await;
        assert!(r.status != 401 && r.status != 405, "{op:?}: {}", r.status);
        if r.status == 404 {
            assert_ne!(
                body_json(&r)["reason"],
                "no such admin endpoint",
                "{op:?} is documented but not routed"
            );
        }
    }

    // An unknown admin path: 401 without the token, 404 JSON with it.
    let r = request(server.addr, "GET", &format!("{API}/nope"), None, Body::None).await;
    assert_error(&r, 401, "unknown admin path without a token");
    expect_error(&server, "GET", &format!("{API}/nope"), Body::None, 404).await;
    server.stop().await;

    // Without an admin token configured: every operation is 404, whatever is presented.
    let mut config = admin_config(db);
    config.admin_token = None;
    let server = TestServer::start(config).await;
    assert_eq!(served_openapi(&server).await, embedded);
    for op in &secured {
        let path = op.path(name);
        for auth in [None, Some(ADMIN_TOKEN), Some("anything")] {
            let r = request(
                server.addr,
                &op.method,
                &path,
                auth,
                op.body(&json_body, &update),
            )
            .await;
            let what = format!("{} {path} with {auth:?}, admin API off", op.method);
            assert_error(&r, 404, &what);
            assert!(
                body_json(&r)["reason"]
                    .as_str()
                    .unwrap()
                    .contains("the admin API is disabled"),
                "{what}"
            );
            assert!(r.header("www-authenticate").is_none(), "{what}");
            check_response(&op.method, &path, 404, &body_json(&r));
        }
    }
    // The document is still there for its clients.
    let bob = join(&server, name, "bob").await;
    assert!(bob.text(TEXT).starts_with("protected"));
    server.stop().await;
}

#[tokio::test]
async fn methods_a_documented_path_does_not_document_get_405_json() {
    on_every_db!(
        "methods_a_documented_path_does_not_document_get_405_json",
        undocumented_methods
    );
}

async fn undocumented_methods(db: &Db) {
    let server = start(db).await;
    let ops = operations(spec());
    let name = "auth/doc";
    // Methods a documented path does not document are refused (405), with the token too.
    let admin_paths = ops
        .iter()
        .map(|o| &o.template)
        .filter(|t| t.starts_with(API));
    for template in admin_paths.collect::<BTreeSet<_>>() {
        let documented: Vec<_> = ops
            .iter()
            .filter(|o| &o.template == template)
            .map(|o| o.method.as_str())
            .collect();
        let path = ops
            .iter()
            .find(|o| &o.template == template)
            .unwrap()
            .path(name);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&method) {
                continue;
            }
            let r = request(server.addr, method, &path, Some(ADMIN_TOKEN), Body::None).await;
            assert_error(&r, 405, &format!("{method} {path} is not documented"));
        }
    }
    server.stop().await;
}

#[test]
fn every_reference_in_the_document_resolves() {
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(spec(), &mut all);
    assert!(all.len() > 20, "{all:?}");
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(spec().pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn the_schema_check_rejects_answers_that_do_not_match() {
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(conforms(&error, &json!({"status": 400, "reason": "bad"})).is_ok());
    assert!(conforms(&error, &json!({"status": 400})).is_err());
    assert!(conforms(&error, &json!({"status": "400", "reason": "bad"})).is_err());
    assert!(conforms(&error, &json!({"status": 400, "reason": "bad", "x": 1})).is_err());
    let page = json!({"$ref": "#/components/schemas/ChangePage"});
    let change = json!({"seq": 1, "time": "2026-11-25T18:49:10.123Z", "size": 3, "author": null,
        "clients": [1], "summary": {"t": {"kind": "text", "inserted": 1, "deleted": 0}}});
    assert!(conforms(&page, &json!({"changes": [change], "next": null})).is_ok());
    let mut bad = change.clone();
    bad["summary"]["t"]["kind"] = json!("rope");
    assert!(conforms(&page, &json!({"changes": [bad], "next": null})).is_err());
    let detail = json!({"$ref": "#/components/schemas/DocumentDetail"});
    assert!(conforms(&detail, &json!({"name": "x"})).is_err());
    let mut detail_answer = json!({"name": "x", "created_at": "2026-11-25T18:49:10.123Z",
        "last_change_at": null, "last_seq": 0, "log_rows": 0, "log_bytes": 0, "snapshots": 0,
        "snapshot_bytes": 0, "stored_bytes": 0, "labels": 0, "connected_clients": 0,
        "loaded": false, "first_logged_seq": null, "latest_snapshot": null});
    assert_eq!(conforms(&detail, &detail_answer), Ok(()));
    detail_answer["created_at"] = json!("yesterday");
    assert!(
        conforms(&detail, &detail_answer).is_err(),
        "times are checked"
    );
    detail_answer["created_at"] = json!("2026-11-25T18:49:10.123Z");
    detail_answer["latest_snapshot"] = json!({"seq": 1, "bytes": 3});
    assert!(
        conforms(&detail, &detail_answer).is_err(),
        "nested types are checked"
    );
    let mut restored = json!({"restored_to": 2, "seq": 7, "changed": true});
    let restore_ok = operation_for("POST", &format!("{API}/documents/a/restore")).unwrap()
        ["responses"]["200"]["content"]["application/json"]["schema"]
        .clone();
    assert_eq!(conforms(&restore_ok, &restored), Ok(()));
    restored["seq"] = json!(null);
    assert_eq!(conforms(&restore_ok, &restored), Ok(()), "seq is nullable");
    restored.as_object_mut().unwrap().remove("seq");
    assert!(conforms(&restore_ok, &restored).is_err(), "seq is required");
    let state = json!({"$ref": "#/components/schemas/State"});
    let mut answer = json!({"seq": 1, "time": null, "content": {
        "t": {"kind": "text", "value": "hi"}, "d": {"kind": "xml", "value": {"type": "doc"}},
        "m": {"kind": "map", "value": {"k": 1}}, "a": {"kind": "array", "value": [1, "x"]}}});
    assert_eq!(conforms(&state, &answer), Ok(()));
    answer["content"]["t"] = json!({"kind": "rope", "value": "hi"});
    assert!(conforms(&state, &answer).is_err(), "root kinds are checked");
    answer["content"]["t"] = json!({"kind": "text", "value": ["hi"]});
    assert!(
        conforms(&state, &answer).is_err(),
        "a text root's value is a string"
    );
    // Request bodies: which optional fields must be given.
    let revocation = json!({"$ref": "#/components/schemas/RevocationRequest"});
    assert_eq!(conforms(&revocation, &json!({"user": "u"})), Ok(()));
    assert!(conforms(&revocation, &json!({})).is_err());
    let restore = json!({"$ref": "#/components/schemas/RestoreRequest"});
    assert_eq!(
        conforms(&restore, &json!({"seq": 1, "author": "a"})),
        Ok(())
    );
    assert!(conforms(&restore, &json!({"seq": 1, "label": "v1"})).is_err());
    assert!(conforms(&restore, &json!({"author": "a"})).is_err());
    assert!(operation_for("GET", &format!("{API}/documents/a%2Fb/timeline?x=1")).is_some());
    assert!(operation_for("PUT", &format!("{API}/documents/a")).is_none());
}

// ---------------------------------------------------------------------------------------------
// The router without TCP

/// The whole router of a server with memory storage, open rooms and the admin API on.
async fn app() -> axum::Router {
    let mut c = config();
    c.database_url = Some("memory".into());
    c.auth = AuthMode::Open;
    c.admin_token = Some(ADMIN_TOKEN.into());
    let state = tandem::open(c, tandem::Drain::default())
        .await
        .expect("open the server state");
    tandem::http::app(state)
}

/// Sends `request` to `app` in memory: the status, the headers and the body.
async fn oneshot(
    app: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    use tower::ServiceExt;
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn the_router_serves_the_document_and_guards_the_admin_api_without_tcp() {
    let get = |uri: &str, auth: Option<&str>| {
        let mut r = axum::http::Request::get(uri);
        if let Some(token) = auth {
            r = r.header("authorization", format!("Bearer {token}"));
        }
        r.body(axum::body::Body::empty()).expect("request")
    };
    let (status, headers, body) = oneshot(app().await, get("/api/v1/openapi.json", None)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let served: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(served, tandem::admin::openapi());

    let path = format!("{API}/documents");
    let (status, headers, body) = oneshot(app().await, get(&path, None)).await;
    let error: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 401, "{error}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    check_response("GET", &path, 401, &error);

    // Memory storage keeps no list: 409, documented and shaped as the document says.
    let (status, _, body) = oneshot(app().await, get(&path, Some(ADMIN_TOKEN))).await;
    let error: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 409, "{error}");
    check_response("GET", &path, 409, &error);
}

#[tokio::test]
async fn the_router_checks_upgrades_before_routing_without_tcp() {
    // A WebSocket upgrade of `/metrics` is a room named "metrics", never the metrics route: in
    // memory there is no connection to upgrade, so the room's upgrade answers 426 where the
    // route would have answered 200 with metrics.
    let upgrade = axum::http::Request::get("/metrics")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(axum::body::Body::empty())
        .expect("request");
    let (status, _, body) = oneshot(app().await, upgrade).await;
    assert_eq!(status, 426, "{:?}", String::from_utf8_lossy(&body));
    let plain = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .expect("request");
    let (status, _, body) = oneshot(app().await, plain).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("# EOF"));
}
