//! The protocols this server speaks: the built-ins, one file each (to add one: write its file and
//! add one line to [`BUILTIN`]), or the table an application installs at start-up ([`install`]),
//! which may leave built-ins out and add protocols of its own.

pub(crate) mod chat;
mod dumb_increment;
mod echo;
mod mirror;
mod status;

use std::sync::OnceLock;

use crate::protocol::ProtocolSpec;

/// Every built-in protocol, by the name a client offers in `Sec-WebSocket-Protocol`.
pub static BUILTIN: &[ProtocolSpec] = &[
    echo::SPEC,
    mirror::SPEC,
    dumb_increment::SPEC,
    status::SPEC,
    chat::SPEC,
];

static INSTALLED: OnceLock<Vec<ProtocolSpec>> = OnceLock::new();

/// Sets the protocols this process speaks, once, before any worker starts (the sessions, the
/// status and the per-protocol metrics read this table, so it cannot change afterwards). Gives
/// the table back if one was installed already.
pub fn install(table: Vec<ProtocolSpec>) -> Result<(), Vec<ProtocolSpec>> {
    INSTALLED.set(table)
}

/// The protocols this process speaks: the installed table, or every built-in when none was
/// installed.
pub fn installed() -> &'static [ProtocolSpec] {
    INSTALLED.get().map_or(BUILTIN, Vec::as_slice)
}

/// Looks a protocol up by name.
pub fn find(name: &str) -> Option<&'static ProtocolSpec> {
    installed().iter().find(|spec| spec.name == name)
}

/// The names of all protocols, comma-separated (for error messages).
pub fn names() -> String {
    installed()
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A protocol's position in [`installed`] (for per-protocol metrics).
pub fn position(name: &str) -> Option<usize> {
    installed().iter().position(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_protocol_has_a_metrics_slot() {
        assert!(super::BUILTIN.len() <= crate::metrics::MAX_PROTOCOLS);
    }

    #[test]
    fn names_are_unique() {
        for (index, spec) in super::BUILTIN.iter().enumerate() {
            assert_eq!(super::position(spec.name), Some(index));
        }
    }
}
