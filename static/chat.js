// Switchboard chat page: the `chat` protocol (see README.md, "The chat protocol").
// One room at a time. The connection comes back by itself (exponential backoff with jitter),
// and on the way back rejoins with `since` + `epoch` so the server replays what was missed.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SHOWN = 1000;

const state = {
  ws: null,
  connected: false,
  attempt: 0,
  nick: localStorage.getItem("chat.nick") || "guest" + Math.floor(1000 + Math.random() * 9000),
  room: null, // the room this page is in (or is joining)
  joined: false, // whether `joined` arrived for `room` on this connection
  recovering: false, // whether the pending join asked for recovery
  epoch: null, // of `room`, with the last message id seen in it
  lastId: 0,
  members: [],
  shown: new Set(), // "epoch:id" of the messages on screen
};

$("nick").value = state.nick;
$("room").value = new URLSearchParams(location.search).get("room") || localStorage.getItem("chat.room") || "lobby";

function setStatus(text, connected) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("connected", connected);
}

function connect() {
  setStatus(state.attempt === 0 ? "connecting…" : "reconnecting", false);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  // With connection tokens on (see README.md, "Access"), the page is opened as chat.html?token=...
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const ws = new WebSocket(scheme + location.host + "/" + query, "chat");
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
    state.attempt = 0;
    setStatus("connected", true);
    if (state.room) {
      sendJoin();
    }
  };
  ws.onmessage = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    handle(data);
  };
  ws.onclose = () => {
    if (state.ws !== ws) {
      return;
    }
    state.connected = false;
    state.joined = false;
    // 0.5 s, 1 s, 2 s … up to 15 s, each with jitter so clients do not come back all at once.
    const delay = Math.min(15000, 500 * 2 ** state.attempt) * (0.5 + Math.random() / 2);
    state.attempt += 1;
    setStatus("reconnecting", false);
    $("status").title = "next attempt in " + Math.round(delay / 100) / 10 + " s";
    setTimeout(connect, delay);
  };
}

function send(request) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(request));
    return true;
  }
  return false;
}

// Joins `state.room`. After a reconnect (or whenever this room's epoch is known) it asks for
// the messages after the last one seen.
function sendJoin() {
  const request = { type: "join", room: state.room, nick: state.nick };
  state.recovering = state.epoch !== null;
  if (state.recovering) {
    request.since = state.lastId;
    request.epoch = state.epoch;
  }
  state.joined = false;
  send(request);
  showWhere();
}

function handle(event) {
  switch (event.type) {
    case "joined":
      return onJoined(event);
    case "message":
      // Events of a room before its `joined` are already contained in it.
      if (inRoom(event)) {
        addMessage(event, false);
      }
      return;
    case "presence":
      if (inRoom(event)) {
        if (event.event === "join") {
          state.members.push(event.nick);
        } else {
          removeOne(state.members, event.nick);
        }
        renderMembers();
        notice(event.nick + (event.event === "join" ? " joined" : " left"));
      }
      return;
    case "nick":
      if (event.room === undefined) {
        state.nick = event.new;
        $("nick").value = event.new;
        localStorage.setItem("chat.nick", event.new);
        showWhere();
        notice("You are now " + event.new);
      } else if (inRoom(event)) {
        const index = state.members.indexOf(event.old);
        if (index >= 0) {
          state.members[index] = event.new;
        }
        renderMembers();
        if (event.old !== state.nick && event.new !== state.nick) {
          notice(event.old + " is now " + event.new);
        }
      }
      return;
    case "left":
      notice("You left " + event.room);
      return;
    case "error":
      notice(event.code + ": " + event.message, "error");
      return;
  }
}

function inRoom(event) {
  return state.joined && event.room === state.room;
}

function onJoined(event) {
  if (event.room !== state.room) {
    return;
  }
  const sameEpoch = event.epoch === state.epoch;
  if (state.recovering) {
    if (event.recovered) {
      const count = event.history.length;
      notice(
        count === 0
          ? "Back in " + event.room + ": nothing was missed."
          : "Back in " + event.room + ": " + count + " missed message" + (count === 1 ? "" : "s") + " recovered.",
      );
    } else {
      notice(
        "Back in " + event.room + ", but missed messages could not all be recovered (" +
          (sameEpoch ? "they are older than the room's history" : "the room has restarted") +
          ")." + (event.history.length ? " The room's recent messages follow." : ""),
        "warning",
      );
    }
  } else {
    notice("You joined " + event.room + " as " + event.nick + ".");
  }
  state.joined = true;
  state.nick = event.nick;
  state.epoch = event.epoch;
  state.lastId = 0;
  for (const message of event.history) {
    addMessage(message, state.recovering);
  }
  state.lastId = Math.max(state.lastId, event.last_id);
  state.members = event.members.slice();
  renderMembers();
  showWhere();
}

function addMessage(message, recovered) {
  const key = message.epoch + ":" + message.id;
  if (state.shown.has(key)) {
    return;
  }
  state.shown.add(key);
  if (message.epoch === state.epoch) {
    state.lastId = Math.max(state.lastId, message.id);
  }
  const line = document.createElement("div");
  line.className = recovered ? "msg recovered" : "msg";
  line.dataset.id = message.id;
  const time = document.createElement("time");
  const date = new Date(message.ts);
  time.dateTime = date.toISOString();
  time.textContent = date.toLocaleTimeString();
  const nick = document.createElement("span");
  nick.className = "nick";
  nick.textContent = message.nick;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  line.append(time, nick, text);
  append(line);
}

function notice(text, kind) {
  const line = document.createElement("div");
  line.className = kind ? "notice " + kind : "notice";
  line.textContent = text;
  append(line);
}

function append(line) {
  const log = $("messages");
  const scroller = log.parentElement;
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  log.append(line);
  while (log.childElementCount > MAX_SHOWN) {
    log.firstElementChild.remove();
  }
  if (atBottom) {
    scroller.scrollTop = scroller.scrollHeight;
  }
}

function removeOne(list, item) {
  const index = list.indexOf(item);
  if (index >= 0) {
    list.splice(index, 1);
  }
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren(
    ...state.members.map((member) => {
      const item = document.createElement("li");
      item.textContent = member;
      if (member === state.nick) {
        item.className = "me";
      }
      return item;
    }),
  );
}

function showWhere() {
  $("where").textContent = state.room
    ? (state.joined ? "in " : "joining ") + state.room + " as " + state.nick
    : "";
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const nick = $("nick").value.trim();
  const room = $("room").value.trim();
  if (!nick || !room) {
    return;
  }
  localStorage.setItem("chat.room", room);
  if (room === state.room) {
    if (state.joined) {
      // Same room: only the nick can change.
      if (nick !== state.nick) {
        send({ type: "nick", nick });
      }
    } else if (state.connected) {
      // The join was refused (say, the nick was too long): try again with this nick.
      state.nick = nick;
      sendJoin();
    }
    return;
  }
  if (state.room && state.joined) {
    send({ type: "leave", room: state.room });
  }
  localStorage.setItem("chat.nick", nick);
  state.nick = nick;
  state.room = room;
  state.epoch = null;
  state.lastId = 0;
  state.members = [];
  state.shown.clear();
  $("messages").replaceChildren();
  renderMembers();
  if (state.connected) {
    sendJoin();
  } else {
    showWhere();
  }
});

$("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) {
    return;
  }
  if (!state.joined) {
    notice("Join a room first.", "error");
    return;
  }
  if (send({ type: "say", room: state.room, text })) {
    input.value = "";
  }
  input.focus();
});

connect();
