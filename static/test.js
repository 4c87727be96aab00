// The libwebsockets-style test page: three connections, one per test protocol.
"use strict";

/** ws:// or wss:// URL of this page's own host (the server upgrades on any path). */
function socketUrl(query) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + "/" + (query || "");
}

function showState(element, text, open) {
  element.textContent = text;
  element.className = "state " + (open ? "open" : "closed");
}

/** Opens a connection and reopens it a second after it closes. */
function keepOpen(query, protocol, stateElement, handlers) {
  let socket;
  function open() {
    socket = new WebSocket(socketUrl(query()), protocol);
    socket.onopen = () => showState(stateElement, "connected", true);
    socket.onmessage = (event) => handlers.message(event.data);
    socket.onclose = (event) => {
      showState(stateElement, "closed (" + event.code + (event.reason ? " " + event.reason : "") + "), reconnecting…", false);
      setTimeout(open, 1000);
    };
  }
  open();
  return {
    send: (data) => socket && socket.readyState === WebSocket.OPEN && socket.send(data),
    reopen: () => socket && socket.close(),
  };
}

// dumb-increment-protocol: a counter every 50 ms; "reset\n" and "closeme\n" commands.
const counter = document.getElementById("counter");
const increment = keepOpen(() => "", "dumb-increment-protocol", document.getElementById("di-state"), {
  message: (data) => { counter.textContent = data; },
});
document.getElementById("reset").onclick = () => increment.send("reset\n");
document.getElementById("closeme").onclick = () => increment.send("closeme\n");

// lws-mirror-protocol: strokes as "d #rrggbb x1 y1 x2 y2;" and circles as "c #rrggbb x y r;".
const canvas = document.getElementById("mirror-canvas");
const ctx = canvas.getContext("2d");
const strokes = document.getElementById("mirror-count");
const mirrorName = document.getElementById("mirror-name");
const mirror = keepOpen(
  () => (mirrorName.value ? "?mirror=" + encodeURIComponent(mirrorName.value) : ""),
  "lws-mirror-protocol",
  document.getElementById("mirror-state"),
  {
    message: (data) => {
      for (const command of data.split(";")) {
        const f = command.trim().split(" ");
        ctx.beginPath();
        if (f[0] === "d" && f.length === 6) {
          ctx.strokeStyle = f[1];
          ctx.moveTo(+f[2], +f[3]);
          ctx.lineTo(+f[4], +f[5]);
        } else if (f[0] === "c" && f.length === 5) {
          ctx.strokeStyle = f[1];
          ctx.arc(+f[2], +f[3], +f[4], 0, Math.PI * 2, true);
        } else {
          continue;
        }
        ctx.stroke();
        strokes.textContent = String(+strokes.textContent + 1);
      }
    },
  },
);
document.getElementById("mirror-join").onclick = () => {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  mirror.reopen();
};
let last = null;
function point(event) {
  const box = canvas.getBoundingClientRect();
  return [Math.round(event.clientX - box.left), Math.round(event.clientY - box.top)];
}
canvas.addEventListener("pointerdown", (event) => { last = point(event); });
canvas.addEventListener("pointerup", () => { last = null; });
canvas.addEventListener("pointerleave", () => { last = null; });
canvas.addEventListener("pointermove", (event) => {
  if (!last) return;
  const next = point(event);
  const colour = document.getElementById("mirror-colour").value;
  mirror.send("d " + colour + " " + last[0] + " " + last[1] + " " + next[0] + " " + next[1] + ";");
  last = next;
});

// lws-status: the live connections, pushed whenever one opens or closes.
const statusList = document.getElementById("status-list");
keepOpen(() => "", "lws-status", document.getElementById("status-state"), {
  message: (data) => {
    const status = JSON.parse(data);
    document.getElementById("server-info").textContent =
      status.version + " on " + status.hostname + " — " + status.total + " connection(s)";
    statusList.replaceChildren(...status.conns.map((conn, index) => {
      const row = document.createElement("tr");
      const since = new Date(parseInt(conn.time, 10) * 1000).toLocaleString();
      for (const text of [index + 1, conn.peer, conn.protocol, since, conn.ua]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      return row;
    }));
  },
});
