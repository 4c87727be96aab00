//! The WebSocket handshake (placeholder).

use actix_web::web;

use crate::{config::Config, server::StartError};

pub struct Handshake;

impl Handshake {
    pub fn new(_config: &Config) -> Result<Handshake, StartError> {
        Ok(Handshake)
    }
}

pub fn routes(_cfg: &mut web::ServiceConfig) {}
