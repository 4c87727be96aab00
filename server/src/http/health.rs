//! Liveness and readiness, for orchestrators and load balancers.

use actix_web::{web, HttpResponse};

use switchboard_actors::registry::broker::broker;

use crate::state::ServerState;

/// Alive: the process answers.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Ready for new connections: 503 once a graceful shutdown has begun, and, in a cluster, until
/// the node has reached its broker once (a later outage keeps it ready: it still serves its
/// own clients).
pub async fn ready(state: web::Data<ServerState>) -> HttpResponse {
    if state.is_draining() {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("draining\n")
    } else if !broker().ready() {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("waiting for the broker\n")
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready\n")
    }
}
