// The gateway's demo chat. Plain JavaScript, no build step: everything here is what a front end
// needs to call the gateway, including streaming with fetch and the error shapes.
"use strict";

// The gateway to call: this page's own origin, or ?api=http://host:port for a page served
// elsewhere (cross-origin, as most front ends are).
const API = new URLSearchParams(location.search).get("api") || location.origin;

const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
let countdown = null;

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setMeta(item, text, cached) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  if (cached) {
    const badge = document.createElement("span");
    badge.className = "badge cache-hit";
    badge.textContent = "from cache";
    badge.title = "The gateway answered from its cache (X-Cache: HIT)";
    meta.append(badge);
  }
  item.append(meta);
}

function busy(on) {
  $("send").disabled = on || countdown !== null;
  $("stop").disabled = !on;
}

// 429 and 503 carry Retry-After: count it down, then let the user try again.
function retryLater(message, seconds) {
  clearInterval(countdown);
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(countdown);
      countdown = null;
      showError(`${message} You can try again now.`);
      busy(false);
      return;
    }
    showError(`${message} Retry in ${left} s.`);
    left -= 1;
  };
  countdown = setInterval(tick, 1000);
  tick();
  busy(false);
}

function explain(status, body, retryAfter) {
  const message = (body && body.error) || `The gateway answered HTTP ${status}.`;
  const code = body && body.code ? ` (${body.code})` : "";
  if ((status === 429 || status === 503) && retryAfter > 0) {
    const what = status === 429 ? "Rate limited:" : "The model is starting or busy:";
    retryLater(`${what} ${message}${code}.`, retryAfter);
  } else {
    showError(`${message}${code}`);
  }
}

function requestBody(stream) {
  return {
    messages: history.slice(),
    parameters: {
      model: $("model").value,
      temperature: Number($("temperature").value),
      max_new_tokens: Number($("max-new-tokens").value),
    },
    stream,
  };
}

function showApiPanel(body) {
  const json = JSON.stringify(body, null, 2);
  $("api-fetch").textContent =
    `const response = await fetch("${API}/api/chat", {\n` +
    `  method: "POST",\n  headers: { "Content-Type": "application/json" },\n` +
    `  body: JSON.stringify(${json.replace(/\n/g, "\n  ")}),\n});\n` +
    (body.stream
      ? "// Server-Sent Events: event: token / replace / done / error"
      : "const { generated_text, error, code } = await response.json();");
  const quoted = JSON.stringify(body).replace(/'/g, "'\\''");
  $("api-curl").textContent =
    `curl -s${body.stream ? "N" : ""} ${API}/api/chat \\\n` +
    `  -H 'Content-Type: application/json' \\\n  -d '${quoted}'`;
}

// Read the SSE events of a streamed reply; onEvent(name, data) is called for each.
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(name, data ? JSON.parse(data) : null);
    }
  }
}

async function send(text) {
  showError("");
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const stream = $("stream").checked;
  const body = requestBody(stream);
  showApiPanel(body);
  const item = addMessage("assistant", "");
  item.setAttribute("aria-busy", "true");
  const textNode = item.querySelector(".text");
  controller = new AbortController();
  busy(true);
  let reply = "";
  try {
    const response = await fetch(`${API}/api/chat`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    const cached = response.headers.get("X-Cache") === "HIT";
    if (!response.ok) {
      const error = await response.json().catch(() => null);
      item.remove();
      history.pop();
      explain(response.status, error, Number(response.headers.get("Retry-After") || 0));
      return;
    }
    let model = $("model").value;
    let finish = "";
    if (stream) {
      await readEvents(response, (name, data) => {
        if (name === "token") reply += data.text;
        else if (name === "replace") reply = data.text;
        else if (name === "done") ({ generated_text: reply, model, finish_reason: finish } = data);
        else if (name === "error") throw Object.assign(new Error(data.error), { body: data });
        textNode.textContent = reply;
      });
    } else {
      ({ generated_text: reply, model } = await response.json());
      textNode.textContent = reply;
    }
    history.push({ role: "assistant", content: reply });
    setMeta(item, `${model}${finish === "length" ? " · cut at max new tokens" : ""}`, cached);
  } catch (error) {
    if (error.name === "AbortError") {
      setMeta(item, "stopped");
      if (reply) history.push({ role: "assistant", content: reply });
      else history.pop();
    } else if (error.body) {
      setMeta(item, "interrupted");
      history.pop();
      explain(502, error.body, 0);
    } else {
      item.remove();
      history.pop();
      showError(`Could not reach the gateway at ${API}: ${error.message}`);
    }
  } finally {
    item.removeAttribute("aria-busy");
    controller = null;
    busy(false);
  }
}

async function init() {
  try {
    const response = await fetch(`${API}/api/models`);
    const catalog = await response.json();
    for (const model of catalog.models) {
      const option = new Option(`${model.id} (${model.type})`, model.id);
      option.selected = model.id === catalog.default;
      $("model").append(option);
    }
    $("max-new-tokens").max = catalog.limits.max_new_tokens;
    if (catalog.test_mode) {
      const banner = $("banner");
      banner.textContent =
        "Test mode: replies come from the gateway's built-in mock, not from a model.";
      banner.hidden = false;
    }
  } catch (error) {
    showError(`Could not reach the gateway at ${API}: ${error.message}`);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
// Enter sends, Shift+Enter starts a new line.
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("temperature").addEventListener("input", () => {
  $("temperature-value").textContent = $("temperature").value;
});
init();
