//! `lws-mirror-protocol`, as in libwebsockets' test server: every message a member sends reaches
//! every member of its instance, the sender included, in order. The instance is chosen by the
//! handshake's `?mirror=NAME` (none: the default instance).

use crate::{
    message::Message,
    protocol::{ConnectionInfo, Opener, Protocol, ProtocolCx, ProtocolSpec, Scope},
};

/// The query parameter naming the instance (a room).
const ROOM_PARAM: &str = "mirror";

pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "lws-mirror-protocol",
    open: Opener::Builtin(|info, _| Box::new(Mirror::new(info))),
    publish: None,
    scope: Scope::Cluster,
    room_param: Some(ROOM_PARAM),
    compression: true,
};

struct Mirror {
    instance: String,
}

impl Mirror {
    fn new(info: &ConnectionInfo) -> Mirror {
        Mirror {
            instance: info.query_param(ROOM_PARAM).unwrap_or_default(),
        }
    }
}

impl Protocol for Mirror {
    fn on_open(&mut self, cx: &mut ProtocolCx<'_>) {
        cx.join(&self.instance);
    }

    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message) {
        cx.broadcast(&self.instance, &message);
    }
}
