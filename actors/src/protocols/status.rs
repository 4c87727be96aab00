//! `lws-status`, as in libwebsockets' test server: pushes a JSON document listing the live
//! connections (peer address, protocol, user agent, connected since) on open and whenever a
//! connection opens or closes, at most every 250 ms (see [`crate::status_board`]).

use crate::{
    message::Message,
    protocol::{Opener, Protocol, ProtocolCx, ProtocolSpec, Scope},
    status_board,
};

pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: status_board::STATUS_PROTOCOL,
    open: Opener::Builtin(|_, _| Box::new(Status)),
    publish: None,
    scope: Scope::Node,
    room_param: None,
    compression: true,
};

struct Status;

impl Protocol for Status {
    fn on_open(&mut self, cx: &mut ProtocolCx<'_>) {
        cx.join("");
        status_board::subscribe(cx.mailbox());
    }

    fn on_close(&mut self, _: &mut ProtocolCx<'_>) {
        status_board::unsubscribe();
    }

    /// The status is read-only; what a client sends is ignored.
    fn on_message(&mut self, _: &mut ProtocolCx<'_>, _: Message) {}
}
