//! The demo pages: a collaborative TipTap editor at `/` and the history viewer at `/history`.
//!
//! They are built from `client-demo/` by vite into `client-demo/dist/`, which is committed and
//! embedded into the binary at compile time, so serving them needs no Node.js (and building
//! the server needs none either). CI rebuilds the bundle and fails when it differs from the
//! committed one. Only plain GET/HEAD requests get here: a WebSocket upgrade on any path is a
//! room, or on `--hocuspocus-path` (`/` by default) a Hocuspocus socket (see `http::dispatch`).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};

/// The built bundle (`client-demo/dist`).
static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../client-demo/dist");

/// Hashed file names (`assets/editor-CF9bIy58.js`) never change content: cache them for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages and unhashed files are revalidated on every load, so a new binary shows its own bundle.
const NO_CACHE: &str = "no-cache";
/// What the pages may load: their own scripts and styles, WebSockets to this server (and the
/// inline `style` attributes ProseMirror decorations use). Nothing else, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; \
                   style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// The routes serving the demo: `/`, `/history`, `/favicon.svg` and `/assets/...`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page("index.html") }))
        .route("/history", get(|| async { page("history.html") }))
        .route("/favicon.svg", get(|| async { file("favicon.svg", NO_CACHE) }))
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>| async move { file(&format!("assets/{path}"), IMMUTABLE) }),
        )
}

/// An HTML page of the bundle, with the security headers pages get.
fn page(name: &str) -> Response {
    let mut response = file(name, NO_CACHE);
    if response.status() == StatusCode::OK {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// A file of the bundle with its content type, or 404.
fn file(path: &str, cache_control: &'static str) -> Response {
    let Some(file) = DIST.get_file(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, cache_control),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        file.contents(),
    )
        .into_response()
}

/// The media type for a file name (only what a vite build produces).
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::Service;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut router = routes::<()>();
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.call(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, body.to_vec())
    }

    fn header(headers: &axum::http::HeaderMap, name: header::HeaderName) -> &str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `/assets/...` files a page references.
    fn assets_of(html: &str) -> Vec<String> {
        html.split('"')
            .filter(|s| s.starts_with("/assets/"))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn pages_and_every_asset_they_reference_are_served() {
        for (path, title) in [("/", "<title>Tandem</title>"), ("/history", "History")] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(
                header(&headers, header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            assert_eq!(header(&headers, header::CACHE_CONTROL), NO_CACHE);
            assert!(
                header(&headers, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'")
            );
            let html = String::from_utf8(body).expect("utf-8");
            assert!(html.contains(title), "{path}: {html}");
            let assets = assets_of(&html);
            assert!(
                assets.iter().any(|a| a.ends_with(".js")),
                "{path} loads no script: {html}"
            );
            for asset in assets {
                let (status, headers, body) = get(&asset).await;
                assert_eq!(status, StatusCode::OK, "{asset}");
                assert!(!body.is_empty(), "{asset}");
                assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
                let expected = if asset.ends_with(".css") {
                    "text/css; charset=utf-8"
                } else {
                    "text/javascript; charset=utf-8"
                };
                assert_eq!(header(&headers, header::CONTENT_TYPE), expected, "{asset}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_files_are_404() {
        for path in [
            "/assets/nope.js",
            "/assets/../index.html",
            "/assets/%2e%2e/index.html",
            "/index",
        ] {
            let (status, _, _) = get(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        let (status, headers, _) = get("/favicon.svg").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, header::CONTENT_TYPE), "image/svg+xml");
    }
}
