//! Who a connection is: the identity its signed connection token (JWT) gives it ([`token`]),
//! and what that identity may do ([`identity`]). The server checks the token at the handshake;
//! protocols read the identity from [`crate::protocol::ProtocolCx::identity`].

pub mod identity;
pub mod token;

pub use identity::Identity;
pub use token::{TokenError, TokenVerifier};
