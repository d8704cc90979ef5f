//! What a proxy must do to headers: drop the hop-by-hop headers (they describe one
//! connection, not the request), say who the request came from, and send
//! an origin-form target to the backend.
//!
//! `Host` is passed on as the client sent it, as HAProxy does and as
//! NGINX's usual `proxy_set_header Host $host` does, so that a backend
//! serving several names sees the one asked for. For an absolute-form
//! request (`GET http://example.com/x`), RFC 9112 makes the URI's authority
//! the request's host, so it becomes `Host`; either way the request goes to
//! the backend the engine chose, never to that host.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri, Version};
use std::net::SocketAddr;

/// The headers that belong to one connection (RFC 9110, 7.6.1), besides
/// those `Connection` names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Why a request with both framing headers is refused. (hyper itself
/// answers 400 to `Content-Length` values that disagree, and drops
/// `Content-Length` beside `Transfer-Encoding`, which is why the raw head
/// is read for this one.)
pub const BOTH_LENGTHS: &str = "the request has both Content-Length and Transfer-Encoding, \
    which a front end and a back end may read differently";

/// Why a request is refused before any backend is chosen, and with what:
/// `CONNECT` (501: this proxy never opens a tunnel to a host of the
/// client's choosing), and targets or `Host` lines that a proxy and a
/// backend could take for different hosts (400: RFC 9112, 3.2 and 3.2.3;
/// RFC 9110, 4.2.4 on user information).
pub fn refused<B>(request: &Request<B>) -> Option<(StatusCode, &'static str)> {
    if request.method() == Method::CONNECT {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not supported: this proxy opens no tunnels",
        ));
    }
    let uri = request.uri();
    if let Some(authority) = uri.authority() {
        if uri.scheme().is_none() {
            return Some((
                StatusCode::BAD_REQUEST,
                "a target of only HOST:PORT is for CONNECT",
            ));
        }
        if authority.as_str().contains('@') {
            return Some((
                StatusCode::BAD_REQUEST,
                "the target has user information, which can hide the host it names",
            ));
        }
    }
    match request.headers().get_all(header::HOST).iter().count() {
        0 if request.version() == Version::HTTP_11 => {
            Some((StatusCode::BAD_REQUEST, "an HTTP/1.1 request without Host"))
        }
        0 | 1 => None,
        _ => Some((
            StatusCode::BAD_REQUEST,
            "the request has more than one Host",
        )),
    }
}

/// Whether the request asks to switch protocols (a WebSocket handshake).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_names(headers, "upgrade")
}

/// Whether `Connection` lists `token`.
fn connection_names(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop headers, keeping `Upgrade` (and a `Connection:
/// upgrade`) when the exchange is an upgrade.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages have none: one pass over their few names says so,
    // where removing each kind would hash and probe for every one.
    let any = headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade_value = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Prepares a client's request for the backend: origin-form target, `Host`,
/// hop-by-hop headers removed, and `X-Forwarded-For`,
/// `X-Forwarded-Proto` and `Via` added.
pub fn for_backend<B>(request: &mut Request<B>, client: SocketAddr, upgrade: bool) {
    let uri = request.uri().clone();
    if let Some(authority) = uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if uri.scheme().is_some() || uri.authority().is_some() {
        if let Ok(origin) = path.parse::<Uri>() {
            *request.uri_mut() = origin;
        }
    }
    let headers = request.headers_mut();
    remove_hop_by_hop(headers, upgrade);
    let ip = client.ip().to_string();
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, 1.1 leastconn"),
        None => "1.1 leastconn".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&via) {
        headers.insert(header::VIA, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, &str)], uri: &str) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a request")
    }

    #[test]
    fn a_request_for_the_backend_loses_hop_by_hop_headers_and_says_who_sent_it() {
        let mut r = request(
            &[
                ("host", "shop.example"),
                ("connection", "keep-alive, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("x-forwarded-for", "10.0.0.1"),
                ("accept", "*/*"),
            ],
            "http://other.example/a?b=1",
        );
        for_backend(&mut r, "127.0.0.9:5000".parse().unwrap(), false);
        assert_eq!(r.uri(), "/a?b=1");
        let h = r.headers();
        assert_eq!(h["host"], "other.example");
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], "1.1 leastconn");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_headers() {
        let mut r = request(
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("host", "h"),
            ],
            "/chat",
        );
        assert!(wants_upgrade(r.headers()));
        for_backend(&mut r, "127.0.0.1:1".parse().unwrap(), true);
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert_eq!(r.headers()["connection"], "upgrade");
        assert_eq!(r.headers()["host"], "h");
    }
}
