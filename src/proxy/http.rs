//! The proxy's HTTP endpoint: `/metrics` for Prometheus and `/status` for people and scripts.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

/// Content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the HTTP endpoint serves; implemented by the proxy.
pub trait Exporter: Send + Sync + 'static {
    /// OpenMetrics text for /metrics.
    fn metrics(&self) -> String;
    /// JSON document for /status.
    fn status(&self) -> serde_json::Value;
}

/// Shared exporter as the handlers see it.
type Shared = Arc<dyn Exporter>;

/// GET /metrics.
async fn metrics(State(exporter): State<Shared>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], exporter.metrics())
}

/// GET /status.
async fn status(State(exporter): State<Shared>) -> Json<serde_json::Value> {
    Json(exporter.status())
}

/// The routes; anything else gets the router's default 404.
fn router(exporter: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(exporter)
}

/// Serves GET /metrics (content-type `application/openmetrics-text; version=1.0.0; charset=utf-8`),
/// GET /status (application/json) and 404 otherwise, on `listener`, until the task is
/// dropped/aborted.
pub async fn serve(listener: tokio::net::TcpListener, exporter: Arc<dyn Exporter>) -> std::io::Result<()> {
    axum::serve(listener, router(exporter)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct Fixed;

    impl Exporter for Fixed {
        fn metrics(&self) -> String {
            "cachemig_proxy_requests_total 3\n# EOF\n".to_owned()
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"id": "p1", "generation": 4})
        }
    }

    /// A parsed response: status code, content type, body.
    struct Reply {
        code: u16,
        content_type: Option<String>,
        body: String,
    }

    /// One request over a fresh connection; `Connection: close` lets the body run to EOF.
    async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let code = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.trim().to_owned());
        Reply {
            code,
            content_type,
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn serves_metrics_status_and_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Fixed)));

        let reply = get(addr, "/metrics").await;
        assert_eq!(reply.code, 200);
        assert_eq!(reply.content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        assert_eq!(reply.body, Fixed.metrics());

        let reply = get(addr, "/status").await;
        assert_eq!(reply.code, 200);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json, Fixed.status());

        assert_eq!(get(addr, "/other").await.code, 404);
        server.abort();
    }
}
