//! `echo`: sends every whole message back to its sender, with its type (text or binary).

use crate::{
    message::Message,
    protocol::{Opener, Protocol, ProtocolCx, ProtocolSpec, Scope},
};

pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "echo",
    open: Opener::Builtin(|_, _| Box::new(Echo)),
    publish: None,
    scope: Scope::Node,
    room_param: None,
    compression: true,
};

struct Echo;

impl Protocol for Echo {
    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message) {
        cx.send(&message);
    }
}
