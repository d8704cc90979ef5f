//! `GET /` on the admin listener: a page that reads `/stats` every second
//! and shows each backend's load, share, health, weight and mean latency.
//! One self-contained file, `dashboard.html`: no build step, nothing
//! fetched from elsewhere.

use super::body::Reply;
use bytes::Bytes;
use hyper::{Response, StatusCode};

const PAGE: &str = include_str!("dashboard.html");

/// The answer to `GET /`.
pub fn response() -> Response<Reply> {
    Reply::response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(PAGE.as_bytes()),
    )
}
