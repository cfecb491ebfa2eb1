//! The example app driven through its router in-process: no socket, no port, the same HTTP layer,
//! broker and commands as over the network.

use axum::body::Body;
use axum::http::Request;
use axum::http::header::CONTENT_TYPE;
use cohort::{Config, Running};
use reqwest::Method;
use serde_json::Value;
use tower::ServiceExt;

use crate::{Reply, start_app};

/// One embedded instance of the example app that serves no socket, sent requests with
/// `tower::ServiceExt::oneshot` on its router.
pub struct InProcess {
    running: Running,
}

impl InProcess {
    /// Starts the instance, `configure` adjusting its configuration.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        Self::try_start(configure)
            .await
            .expect("the example app starts")
    }

    /// Like [`InProcess::start`], returning the error of a start that is refused.
    pub async fn try_start(configure: impl FnOnce(&mut Config)) -> Result<Self, cohort::Error> {
        let configure = |config: &mut Config| {
            config.http_addr = None;
            configure(config);
        };
        let running = start_app(configure, |app| app).await?;
        Ok(InProcess { running })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    /// Sends `body` as it is (malformed JSON included).
    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Body::from(body.unwrap_or_default()))
            .expect("a valid request");
        let Ok(response) = self.running.router().oneshot(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body arrives");
        Reply::new(status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}
