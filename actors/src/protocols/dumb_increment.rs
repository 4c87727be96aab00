//! `dumb-increment-protocol`, as in libwebsockets' test server: after open, a text message with
//! an incrementing decimal counter every `--increment-interval`; `reset\n` sets the counter to 0;
//! `closeme\n` closes with 1001 "seeya".

use std::time::Duration;

use crate::{
    close::code,
    message::Message,
    protocol::{Opener, Protocol, ProtocolCx, ProtocolSpec, Scope},
};

pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "dumb-increment-protocol",
    open: Opener::Builtin(|_, settings| {
        Box::new(DumbIncrement {
            next: 0,
            interval: settings.increment_interval,
        })
    }),
    publish: None,
    scope: Scope::Node,
    room_param: None,
    compression: false,
};

struct DumbIncrement {
    next: u64,
    interval: Duration,
}

impl Protocol for DumbIncrement {
    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    /// Like libwebsockets, a number is produced only when the previous one has been written:
    /// a slow reader sees the counter advance more slowly, never a queue of stale numbers.
    fn on_tick(&mut self, cx: &mut ProtocolCx<'_>) {
        if cx.backlog() == 0 {
            cx.send_text(self.next.to_string());
            self.next += 1;
        }
    }

    /// Commands are matched as libwebsockets does: by prefix, newline included.
    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message) {
        let Message::Text(text) = message else {
            return;
        };
        if text.starts_with("reset\n") {
            self.next = 0;
        } else if text.starts_with("closeme\n") {
            cx.close(code::GOING_AWAY, "seeya");
        }
    }
}
