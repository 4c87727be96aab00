//! Where a client puts its connection token: `Authorization: Bearer ...` (clients that can set
//! headers) or `?token=...` (browsers, whose WebSocket API cannot); and keeping it out of logs.

use std::borrow::Cow;

use actix_web::{http::header, HttpRequest};
use switchboard_actors::protocol::ConnectionInfo;

/// The query parameter of the token.
const PARAM: &str = "token";

/// The token the request presents, the header's first.
pub fn presented(req: &HttpRequest) -> Option<String> {
    bearer(req).or_else(|| ConnectionInfo::query_value(req.query_string(), PARAM))
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// A request target with the value of every `token` query parameter replaced, for logs.
pub fn redacted(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let is_token = |pair: &str| pair.split('=').next() == Some(PARAM);
    if !query.split('&').any(is_token) {
        return Cow::Borrowed(target);
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if is_token(pair) {
                format!("{PARAM}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", query.join("&")))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(redacted("/?token=abc.def.ghi"), "/?token=REDACTED");
        assert_eq!(
            redacted("/chat?mirror=x&token=abc&b=1"),
            "/chat?mirror=x&token=REDACTED&b=1"
        );
        assert_eq!(redacted("/?token"), "/?token=REDACTED");
        assert_eq!(redacted("/?tokens=1"), "/?tokens=1");
        assert_eq!(redacted("/index.html"), "/index.html");
    }
}
