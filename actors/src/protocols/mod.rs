//! The protocols this server speaks, one file each. To add one: write its file and add one line
//! to [`ALL`].

pub(crate) mod chat;
mod dumb_increment;
mod echo;
mod mirror;
mod status;

use crate::protocol::ProtocolSpec;

/// Every protocol, by the name a client offers in `Sec-WebSocket-Protocol`.
pub static ALL: &[ProtocolSpec] = &[
    echo::SPEC,
    mirror::SPEC,
    dumb_increment::SPEC,
    status::SPEC,
    chat::SPEC,
];

/// Looks a protocol up by name.
pub fn find(name: &str) -> Option<&'static ProtocolSpec> {
    ALL.iter().find(|spec| spec.name == name)
}

/// The names of all protocols, comma-separated (for error messages).
pub fn names() -> String {
    ALL.iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A protocol's position in [`ALL`] (for per-protocol metrics).
pub fn position(name: &str) -> Option<usize> {
    ALL.iter().position(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_protocol_has_a_metrics_slot() {
        assert!(super::ALL.len() <= crate::metrics::MAX_PROTOCOLS);
    }

    #[test]
    fn names_are_unique() {
        for (index, spec) in super::ALL.iter().enumerate() {
            assert_eq!(super::position(spec.name), Some(index));
        }
    }
}
