// fsmflow console: streamed chat replies and a run page that follows the run live.
// Everything else is plain HTML from the server. EventSource cannot be used: the
// chat POSTs, and both must send the session cookie's CSRF header, so this reads
// server-sent events from fetch() itself.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  // Calls onEvent(name, data, id) for each server-sent event of a fetch() response.
  async function readSse(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let raw = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      raw += decoder.decode(value, { stream: true });
      // A "\r" at the end may be half of a "\r\n" still on its way.
      const tail = raw.endsWith("\r") ? "\r" : "";
      let text = (tail ? raw.slice(0, -1) : raw).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, cut);
        text = text.slice(cut + 2);
        let name = "message";
        let id = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") name = val;
          else if (field === "data") data.push(val);
          else if (field === "id") id = val;
        }
        if (data.length) onEvent(name, data.join("\n"), id);
      }
      raw = text + tail;
    }
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return body.error?.message || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  const setText = (id, text) => {
    const element = document.getElementById(id);
    if (element) element.textContent = text;
  };

  function setStatus(status) {
    const element = document.getElementById("run-status");
    if (!element || !status) return;
    element.textContent = status;
    element.className = `status status-${status}`;
  }

  // Moves the diagram's highlight to `to`, counting the move from `from`.
  function moveTo(from, to) {
    for (const svg of document.querySelectorAll("svg.diagram")) {
      svg.querySelectorAll(".node.current").forEach((node) => node.classList.remove("current"));
      svg.querySelector(`.node[data-state="${CSS.escape(to)}"]`)?.classList.add("current", "visited");
      if (!from) continue;
      const edge = svg.querySelector(
        `.edge[data-from="${CSS.escape(from)}"][data-to="${CSS.escape(to)}"]`,
      );
      if (!edge) continue;
      const count = Number(edge.dataset.count || 0) + 1;
      edge.dataset.count = String(count);
      edge.classList.add("taken");
      const label = edge.querySelector(".count");
      if (label) label.textContent = `×${count}`;
    }
  }

  // ------------------------------------------------------------- a run, live

  function log(text, kind) {
    const list = document.getElementById("live");
    if (!list) return;
    const item = document.createElement("li");
    item.className = `t-${kind}`;
    item.textContent = text;
    list.append(item);
  }

  function followRun(run) {
    let offset = Number(run.dataset.offset || 0);
    let step = Number(run.dataset.step || 0);
    const show = (event) => {
      switch (event.kind) {
        case "state":
          if ((event.step || 0) > step) {
            moveTo(event.from_state || "", event.state);
            step = event.step || 0;
            run.dataset.step = String(step);
          }
          setText("run-state", event.state);
          setText("run-step", String(event.step || 0));
          setStatus(event.status);
          if (event.status === "active") setText("run-waiting", "message or model");
          log(`moved ${event.from_state || "(start)"} → ${event.state}`, "state");
          break;
        case "gate":
          if (event.decision) {
            log(`${event.decision} at ${event.state} by ${event.by}${event.text ? `: ${event.text}` : ""}`, "gate");
            document.querySelector("#gate .decide")?.remove();
            setText("run-waiting", "the run to apply the decision");
          } else {
            log(`approval gate opened at ${event.state}`, "gate");
            setStatus("awaiting_approval");
            setText("run-waiting", "approval");
            document.getElementById("gate")?.classList.remove("hidden");
          }
          break;
        case "reply":
          log(`reply in ${event.state}: ${event.text || ""}`, "reply");
          break;
        case "tool_call":
          log(`tool ${event.tool} called`, "tool");
          break;
        case "tool_result":
          log(`tool ${event.tool} ${event.accepted ? "returned" : "failed"}`, "tool");
          break;
        case "ended":
          setStatus(event.status);
          setText("run-waiting", "nothing");
          setText("run-execution", "closed");
          setText("run-end-reason", event.text || event.status);
          document.getElementById("run-ended")?.classList.remove("hidden");
          document.getElementById("gate")?.classList.add("hidden");
          log(`run ended (${event.status})${event.text ? `: ${event.text}` : ""}`, "ended");
          break;
        default:
          break; // deltas and resets: the chat shows those
      }
    };
    (async () => {
      for (let attempt = 1; attempt <= 30; attempt++) {
        let ended = false;
        try {
          const response = await fetch(`${run.dataset.events}?from_offset=${offset}`, {
            headers: { Accept: "text/event-stream" },
            credentials: "same-origin",
          });
          if (!response.ok) {
            setText("live-status", `Live updates stopped: ${await errorText(response)}`);
            return;
          }
          setText("live-status", "Following the run's events.");
          await readSse(response, (name, data, id) => {
            if (id !== null) offset = Number(id) + 1;
            if (name === "end") ended = true;
            else if (name === "error") setText("live-status", `Live updates failed: ${data}`);
            else show(JSON.parse(data));
            attempt = 1;
          });
        } catch (error) {
          setText("live-status", `Reconnecting to the run's events… (${error.message})`);
        }
        if (ended) {
          setText("live-status", "The run has ended; all its events are shown.");
          return;
        }
        await sleep(Math.min(1000 * attempt, 10000));
      }
    })();
  }

  // ------------------------------------------------------------------- chat

  function chatWith(chat) {
    const form = document.getElementById("chat-form");
    const input = document.getElementById("chat-text");
    const send = document.getElementById("chat-send");
    const messages = document.getElementById("messages");
    const problem = document.getElementById("chat-error");
    const bubble = (who, text) => {
      const item = document.createElement("li");
      item.className = `msg ${who}`;
      const body = document.createElement("div");
      body.className = "bubble";
      body.textContent = text;
      item.append(body);
      messages.append(item);
      return item;
    };
    const fail = (text) => {
      problem.textContent = text;
      problem.classList.remove("hidden");
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || send.disabled) return;
      problem.classList.add("hidden");
      bubble("user", text);
      input.value = "";
      const reply = bubble("agent", "");
      reply.classList.add("streaming");
      reply.setAttribute("aria-busy", "true");
      const body = reply.querySelector(".bubble");
      send.disabled = true;
      const request = {
        text,
        message_id: `console-${crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)}`,
      };
      if (chat.dataset.agent) request.agent = chat.dataset.agent;
      try {
        const response = await fetch(chat.dataset.url, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "text/event-stream",
            "X-CSRF-Token": csrf,
          },
          body: JSON.stringify(request),
        });
        if (!response.ok) {
          reply.remove();
          fail(await errorText(response));
          return;
        }
        await readSse(response, (name, data) => {
          const value = JSON.parse(data);
          if (name === "delta") body.textContent += value.text;
          else if (name === "reset") body.textContent = "";
          else if (name === "error") fail(value.error?.message || data);
          else if (name === "reply") {
            body.textContent = value.message;
            reply.dataset.state = value.state;
            const after = document.createElement("span");
            after.className = "state-after";
            after.textContent = `→ ${value.state}${value.status !== "active" ? ` (${value.status})` : ""}`;
            reply.append(after);
            setText("chat-state", value.state);
            delete chat.dataset.agent; // the run exists now
            if (value.created) history.replaceState(null, "", `?run=${encodeURIComponent(value.id)}`);
          }
        });
        if (!reply.dataset.state && !body.textContent) reply.remove();
      } catch (error) {
        fail(`The reply was cut off: ${error.message}. Send the message again.`);
      } finally {
        reply.classList.remove("streaming");
        reply.removeAttribute("aria-busy");
        send.disabled = false;
        input.focus();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const run = document.getElementById("run");
    if (run?.dataset.events) followRun(run);
    const chat = document.getElementById("chat");
    if (chat) chatWith(chat);
  });
})();
