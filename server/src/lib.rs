//! The `switchboard` server as a library: the binary (`main.rs`) runs it, and the fuzz targets
//! (`fuzz/`) reach the parsers that face the network through [`fuzzing`].

mod access;
pub mod config;
mod config_file;
mod http;
pub mod lifecycle;
pub mod probe;
pub mod server;
mod state;
mod tls;
pub mod token_command;
mod units;
mod ws;

/// The parsers the fuzz targets in `fuzz/` drive; not an interface of the server.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::access::origin::OriginPolicy;
    pub use crate::config_file::apply_text as apply_config_text;
    pub use crate::http::byteranges::Multipart;
    pub use crate::http::file_body::{total_len, Segment};
    pub use crate::http::ranges::{plan as range_plan, ByteRange, RangePlan, MAX_PARTS};
    pub use crate::http::upload::{part_file_name, sanitize_file_name, MAX_NAME};
    pub use crate::units::{parse_bytes, parse_duration, parse_usize_bytes};
}
