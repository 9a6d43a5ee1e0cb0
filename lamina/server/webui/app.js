// lamina's chat page. It talks to the server that serves it, through /health, /props and the
// OpenAI-compatible /v1/chat/completions (streamed), and keeps conversations in localStorage.
// Nothing it shows is ever parsed as HTML: user text is set as textContent, answers go through
// markdown.js, which builds DOM nodes from text.

import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const SETTINGS = ["temperature", "top_p", "top_k", "min_p", "max_tokens", "seed"];
const KEY = { conversations: "lamina.conversations", current: "lamina.current", settings: "lamina.settings",
              apiKey: "lamina.apiKey" };

const state = {
  conversations: [],   // [{id, title, created, messages: [{role, content, timings?, stopped?, error?}]}]
  currentId: null,
  streaming: null,     // {controller, conversationId}
  ready: false,
};

// -- storage ---------------------------------------------------------------------------------------
function readJSON(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

function save() {
  try {
    localStorage.setItem(KEY.conversations, JSON.stringify(state.conversations));
    localStorage.setItem(KEY.current, JSON.stringify(state.currentId));
  } catch (e) {  // storage full or disabled: keep working, say so
    setStatus(`Conversations could not be saved in this browser: ${e.message}`, "error");
  }
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

/** A conversation from untrusted JSON (an import, or storage edited by hand), or null. */
function cleanConversation(c) {
  if (!c || typeof c !== "object" || !Array.isArray(c.messages)) return null;
  const messages = c.messages
    .filter((m) => m && ["user", "assistant", "system"].includes(m.role) && typeof m.content === "string")
    .map((m) => ({ role: m.role, content: m.content,
                   ...(m.timings && typeof m.timings === "object" ? { timings: m.timings } : {}),
                   ...(m.truncated === true ? { truncated: true } : {}), ...(m.stopped === true ? { stopped: true } : {}),
                   ...(typeof m.error === "string" ? { error: m.error.slice(0, 500) } : {}) }));
  return { id: newId(), title: typeof c.title === "string" && c.title ? c.title.slice(0, 200) : "Imported chat",
           created: Number.isFinite(c.created) ? c.created : Date.now(), messages };
}

function current() {
  return state.conversations.find((c) => c.id === state.currentId) || null;
}

function startConversation() {
  const c = { id: newId(), title: "New chat", created: Date.now(), messages: [] };
  state.conversations.unshift(c);
  state.currentId = c.id;
  save();
  return c;
}

// -- status ----------------------------------------------------------------------------------------
function setStatus(text, kind = "info") {
  const el = $("status");
  el.textContent = text;
  el.dataset.kind = kind;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body?.error;
    return String((typeof error === "string" ? error : error?.message) || `HTTP ${response.status}`);
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** Watch /health: loading (503), ready, or gone; then read the defaults from /props. */
async function watchServer() {
  let delay = 1000;
  try {
    const r = await fetch("/health", { cache: "no-store" });
    if (r.ok) {
      if (!state.ready) {
        state.ready = true;
        setStatus("Ready", "ok");
        await loadProps();
      }
      delay = 5000;
    } else if (r.status === 503) {
      state.ready = false;
      setStatus(`The server is loading the model… (${await errorText(r)})`, "warn");
    } else {
      state.ready = false;
      setStatus(`The server answered ${r.status}`, "error");
    }
  } catch {
    state.ready = false;
    setStatus("The server cannot be reached. Is lamina serve still running?", "error");
    delay = 3000;
  }
  setTimeout(watchServer, delay);
}

async function loadProps() {
  try {
    const r = await fetch("/props", { headers: headers() });
    if (r.status === 401) {
      askForKey("This server needs an API key.");
      return;
    }
    if (!r.ok) return;
    const props = await r.json();
    const params = props?.default_generation_settings?.params || {};
    const defaults = { ...params, max_tokens: params.n_predict };
    for (const name of SETTINGS) {
      if (defaults[name] !== undefined && defaults[name] !== null) $(`set-${name}`).placeholder = String(defaults[name]);
    }
    const name = String(props.model_alias || "").split("/").pop();
    if (name) $("model-name").textContent = name;
  } catch {
    /* the status line already says what is wrong */
  }
}

function askForKey(message) {
  setStatus(message, "error");
  showSettings(true);
  $("api-key").focus();
}

// -- settings --------------------------------------------------------------------------------------
function showSettings(open) {
  $("settings").hidden = !open;
  $("toggle-settings").setAttribute("aria-expanded", String(open));
}

function loadSettings() {
  const saved = readJSON(KEY.settings, {});
  for (const name of SETTINGS) $(`set-${name}`).value = saved[name] ?? "";
  $("system-prompt").value = saved.system ?? "";
  $("api-key").value = readJSON(KEY.apiKey, "");
}

function saveSettings() {
  const saved = { system: $("system-prompt").value };
  for (const name of SETTINGS) saved[name] = $(`set-${name}`).value;
  localStorage.setItem(KEY.settings, JSON.stringify(saved));
  localStorage.setItem(KEY.apiKey, JSON.stringify($("api-key").value));
}

function samplingFields() {
  const out = {};
  for (const name of SETTINGS) {
    const raw = $(`set-${name}`).value.trim();
    if (raw === "") continue;
    const value = Number(raw);
    if (Number.isFinite(value)) out[name] = ["top_k", "max_tokens", "seed"].includes(name) ? Math.trunc(value) : value;
  }
  return out;
}

// -- rendering -------------------------------------------------------------------------------------
function renderList() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of state.conversations) {
    const li = document.createElement("li");
    li.className = c.id === state.currentId ? "active" : "";
    li.dataset.id = c.id;
    const title = document.createElement("button");
    title.type = "button";
    title.className = "title";
    title.textContent = c.title;
    title.addEventListener("click", () => {
      state.currentId = c.id;
      save();
      render();
      document.body.classList.remove("sidebar-open");
    });
    const rename = document.createElement("button");
    rename.type = "button";
    rename.className = "icon rename";
    rename.title = "Rename";
    rename.textContent = "✎";
    rename.addEventListener("click", () => startRename(li, c));
    const del = document.createElement("button");
    del.type = "button";
    del.className = "icon delete";
    del.title = "Delete";
    del.textContent = "×";
    del.addEventListener("click", () => {
      if (state.streaming?.conversationId === c.id) state.streaming.controller.abort();
      state.conversations = state.conversations.filter((x) => x.id !== c.id);
      if (state.currentId === c.id) state.currentId = state.conversations[0]?.id ?? null;
      save();
      render();
    });
    li.append(title, rename, del);
    ul.append(li);
  }
}

function startRename(li, c) {
  const input = document.createElement("input");
  input.value = c.title;
  input.className = "rename-input";
  const done = (commit) => {
    if (commit && input.value.trim()) c.title = input.value.trim().slice(0, 200);
    save();
    renderList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") done(true);
    if (e.key === "Escape") done(false);
  });
  input.addEventListener("blur", () => done(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function timingsLine(t) {
  const parts = [];
  if (Number.isFinite(t.predicted_n)) parts.push(`${t.predicted_n} tokens`);
  if (Number.isFinite(t.predicted_per_second)) parts.push(`${t.predicted_per_second.toFixed(1)} tokens/s`);
  if (Number.isFinite(t.prompt_ms)) parts.push(`first token after ${Math.round(t.prompt_ms)} ms`);
  if (Number.isFinite(t.cache_n) && t.cache_n > 0) parts.push(`${t.cache_n} prompt tokens cached`);
  return parts.join(" · ");
}

function messageView(conv, index) {
  const m = conv.messages[index];
  const box = document.createElement("div");
  box.className = `msg ${m.role}`;
  box.dataset.index = String(index);
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "assistant") body.append(renderMarkdown(m.content));
  else body.textContent = m.content;
  box.append(body);
  const foot = document.createElement("div");
  foot.className = "foot";
  if (m.timings) foot.append(Object.assign(document.createElement("span"), { className: "timings",
                                                                                textContent: timingsLine(m.timings) }));
  if (m.truncated) foot.append(Object.assign(document.createElement("span"), { className: "note",
                                                                               textContent: "reached the token limit" }));
  if (m.stopped) foot.append(Object.assign(document.createElement("span"), { className: "note", textContent: "stopped" }));
  if (m.error) foot.append(Object.assign(document.createElement("span"), { className: "note error", textContent: m.error }));
  const busy = Boolean(state.streaming);
  const last = index === conv.messages.length - 1;
  if (m.role === "user" && !busy) foot.append(action("Edit", "edit", () => startEdit(box, conv, index)));
  if (m.role === "assistant" && last && !busy) foot.append(action("Regenerate", "regenerate", () => regenerate(conv)));
  if (m.role === "assistant" && m.content) foot.append(action("Copy", "copy-answer", (b) => copyAnswer(m.content, b)));
  box.append(foot);
  return box;
}

function action(label, cls, fn) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `action ${cls}`;
  b.textContent = label;
  b.addEventListener("click", () => fn(b));
  return b;
}

async function copyAnswer(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1200);
}

function renderMessages() {
  const view = $("messages");
  const conv = current();
  view.replaceChildren();
  if (!conv || !conv.messages.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "Ask anything. The model runs on this machine; nothing leaves it.";
    view.append(empty);
    return;
  }
  conv.messages.forEach((_, i) => view.append(messageView(conv, i)));
  view.scrollTop = view.scrollHeight;
}

function render() {
  renderList();
  renderMessages();
  const busy = Boolean(state.streaming);
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

/** Repaint only the streaming answer (a full render per token would be slow and lose the scroll). */
function repaintLast(conv) {
  if (conv.id !== state.currentId) return;
  const view = $("messages");
  const index = conv.messages.length - 1;
  const old = view.querySelector(`.msg[data-index="${index}"]`);
  const fresh = messageView(conv, index);
  if (state.streaming?.conversationId === conv.id) fresh.classList.add("streaming");
  if (old) old.replaceWith(fresh);
  else view.append(fresh);
  const nearBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 120;
  if (nearBottom) view.scrollTop = view.scrollHeight;
}

function startEdit(box, conv, index) {
  const area = document.createElement("textarea");
  area.className = "edit-box";
  area.value = conv.messages[index].content;
  const send = action("Send", "edit-send", () => {
    const text = area.value.trim();
    if (!text) return;
    conv.messages = conv.messages.slice(0, index);
    conv.messages.push({ role: "user", content: text });
    save();
    generate(conv);
  });
  const cancel = action("Cancel", "edit-cancel", () => renderMessages());
  box.replaceChildren(area, Object.assign(document.createElement("div"), { className: "foot" }));
  box.lastChild.append(send, cancel);
  area.focus();
}

// -- generating ------------------------------------------------------------------------------------
function regenerate(conv) {
  if (conv.messages.at(-1)?.role === "assistant") conv.messages.pop();
  dropFailedAnswers(conv);
  save();
  generate(conv);
}

/** Answers that failed before any text: dropped once the user goes on, so roles keep alternating. */
function dropFailedAnswers(conv) {
  conv.messages = conv.messages.filter((m) => !(m.role === "assistant" && !m.content));
}

function send(text) {
  const conv = current() || startConversation();
  dropFailedAnswers(conv);
  if (!conv.messages.length) conv.title = text.replace(/\s+/g, " ").slice(0, 48) || "New chat";
  conv.messages.push({ role: "user", content: text });
  save();
  generate(conv);
}

/** The data of each Server-Sent Event of a streamed response, as they arrive (CRLF or LF framing,
 * several data lines joined, a last event without its blank line included). */
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const dataOf = (block) => {
    const lines = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(l.startsWith("data: ") ? 6 : 5));
    return lines.length ? lines.join("\n") : null;
  };
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    buffer = buffer.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = dataOf(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (data !== null) yield data;
    }
    if (done) {
      const data = dataOf(buffer);
      if (data !== null) yield data;
      return;
    }
  }
}

async function generate(conv) {
  const system = $("system-prompt").value.trim();
  const history = conv.messages.filter((m) => !(m.role === "assistant" && !m.content))  // failed answers
    .map(({ role, content }) => ({ role, content }));
  const body = { messages: system ? [{ role: "system", content: system }, ...history] : history, stream: true,
                 stream_options: { include_usage: true }, ...samplingFields() };
  const answer = { role: "assistant", content: "" };
  conv.messages.push(answer);
  const controller = new AbortController();
  state.streaming = { controller, conversationId: conv.id };
  render();
  let pending = false;
  const repaint = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; repaintLast(conv); }, 40);  // not rAF: it pauses in hidden tabs
  };
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                    signal: controller.signal });
    if (!r.ok) {
      const message = await errorText(r);
      if (r.status === 401) askForKey(`The server refused the API key: ${message}`);
      else if (r.status === 503) setStatus(`The server is busy or loading: ${message}. Try again in a moment.`, "warn");
      else setStatus(message, "error");
      answer.error = message;
      return;
    }
    setStatus("Generating…", "ok");
    for await (const data of events(r)) {
      if (data === "[DONE]") break;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue;
      }
      if (!chunk || typeof chunk !== "object") continue;
      if (chunk.error) {
        answer.error = String(chunk.error.message || chunk.error || "the server ended the answer with an error");
        setStatus(answer.error, "error");
        break;
      }
      const delta = chunk.choices?.[0]?.delta?.content;
      if (typeof delta === "string" && delta) {
        answer.content += delta;
        repaint();
      }
      if (chunk.choices?.[0]?.finish_reason === "length") answer.truncated = true;
      if (chunk.timings) answer.timings = chunk.timings;
    }
    if (!answer.error) setStatus("Ready", "ok");
  } catch (e) {
    if (e.name === "AbortError") {
      answer.stopped = true;
      setStatus("Stopped", "info");
    } else {
      answer.error = "the connection to the server was lost";
      setStatus("The server cannot be reached. Is lamina serve still running?", "error");
    }
  } finally {
    state.streaming = null;
    save();
    render();
  }
}

// -- import / export -------------------------------------------------------------------------------
function exportAll() {
  const blob = new Blob([JSON.stringify(state.conversations, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `lamina-conversations-${new Date().toISOString().slice(0, 10)}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function importFile(file) {
  try {
    const data = JSON.parse(await file.text());
    const list = (Array.isArray(data) ? data : [data]).map(cleanConversation).filter(Boolean);
    if (!list.length) throw new Error("no conversations in it");
    state.conversations = [...list, ...state.conversations];
    state.currentId = list[0].id;
    save();
    render();
    setStatus(`Imported ${list.length} conversation${list.length > 1 ? "s" : ""}`, "ok");
  } catch (e) {
    setStatus(`Could not import ${file.name}: ${e.message}`, "error");
  }
}

// -- start -----------------------------------------------------------------------------------------
function wire() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.streaming) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.streaming?.controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (state.streaming) return;
    startConversation();
    render();
    $("input").focus();
    document.body.classList.remove("sidebar-open");
  });
  $("toggle-settings").addEventListener("click", () => showSettings($("settings").hidden));
  $("settings").addEventListener("input", saveSettings);
  $("api-key").addEventListener("change", () => { state.ready = false; });
  $("export").addEventListener("click", exportAll);
  $("import").addEventListener("change", (e) => {
    const file = e.target.files?.[0];
    if (file) importFile(file);
    e.target.value = "";
  });
  $("open-sidebar").addEventListener("click", () => document.body.classList.add("sidebar-open"));
  $("close-sidebar").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
}

function start() {
  const saved = readJSON(KEY.conversations, []);
  state.conversations = (Array.isArray(saved) ? saved : []).map((c) => {
    const clean = cleanConversation(c);
    if (clean && typeof c.id === "string") clean.id = c.id;
    return clean;
  }).filter(Boolean);
  state.currentId = readJSON(KEY.current, null);
  if (!current()) state.currentId = state.conversations[0]?.id ?? null;
  loadSettings();
  wire();
  render();
  watchServer();
}

start();
