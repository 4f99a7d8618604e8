//! CrowNest's HTTP API (`/v1`).
//!
//! Every success is `{ "data": ... }`; every error is
//! `{ "error": { "code", "message", "requestId" } }` with the right status.
//! Every request is authenticated (an API key or the admin token as a bearer
//! token). Mutating endpoints accept `Idempotency-Key`.

mod auth;
mod denials;
mod error;
mod idempotency;
mod json;
mod routes;
mod state;
mod views;

pub use state::{AppState, Limits};

pub use routes::sweep_abandoned_transfers;

/// The metrics router (served on its own listener).
pub fn metrics_router(state: AppState) -> axum::Router {
    routes::metrics_router(state)
}

/// The full router.
pub fn router(state: AppState) -> axum::Router {
    routes::router(state)
}
