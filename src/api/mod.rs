//! The tailnet HTTP API: routes, the per-request middleware and the connection loop.
//!
//! Requests flow one way: [`serve`] accepts a connection (within the [`limits`] of its peer) and tags each
//! request with the connection's address → [`middleware`] (request ID, metrics, spans, error bodies, then the
//! peer's request budget and size limits) → a handler in [`handlers`]
//! (parse with [`params`], identify and call the [`service`], render with [`render`]). The service holds
//! everything that is not HTTP; [`error`] is the layer's one error type.

pub mod call;
mod connection;
pub mod error;
mod handlers;
pub mod limits;
pub mod middleware;
mod openapi;
pub mod params;
pub mod render;
pub mod serve;
pub mod service;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

pub use call::{RemoteAddr, RequestId};
pub use error::ApiError;
pub use service::Service;

pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route(
            "/api/v1alpha1/login",
            post(handlers::login).get(handlers::get_login),
        )
        .route("/api/v1alpha1/kubeconfig", get(handlers::kubeconfig))
        .route("/api/v1alpha1/logout", post(handlers::logout))
        .route("/api/v1alpha1/cluster-info", get(handlers::cluster_info))
        .route(
            "/api/v1alpha1/exec-credential",
            get(handlers::exec_credential),
        )
        .route("/api/v1alpha1/whoami", get(handlers::whoami))
        .route("/api/v1alpha1/clusters", get(handlers::clusters))
        .route("/federation/v1alpha1/heartbeat", post(handlers::heartbeat))
        .route(
            "/federation/v1alpha1/sessions",
            post(handlers::create_session)
                .get(handlers::list_sessions)
                .delete(handlers::delete_sessions),
        )
        .route("/federation/v1alpha1/tokens", post(handlers::tokens))
        .route("/openapi.json", get(openapi::document))
        .route("/swagger", get(openapi::redirect))
        .route("/swagger/{*rest}", get(openapi::redirect))
        .fallback(|| async { ApiError::no_route() })
        // Streamed (chunked) bodies too: a handler reading one stops at the limit and answers 413.
        .layer(DefaultBodyLimit::max(middleware::MAX_BODY as usize))
        .layer(from_fn_with_state(svc.clone(), middleware::limit))
        .layer(from_fn_with_state(svc.clone(), middleware::observe))
        .with_state(svc)
}
