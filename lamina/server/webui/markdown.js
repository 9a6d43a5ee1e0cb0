// Markdown to DOM nodes, never to HTML: every piece of text the model or the user wrote becomes a
// text node (textContent), so nothing in a message can become an element, an attribute or a script.
// Covers what chat answers use: fenced code (with a language-agnostic highlighter and a copy
// button), inline code, headings, lists, quotes, rules, bold, italic and http(s) links. Math is
// left as text.

const KEYWORDS = new Set((
  "and as assert async await break case catch class const continue def default del do elif else enum " +
  "except export extends false finally fn for from func function go if impl import in interface is " +
  "lambda let loop match mod mut new nil none not null or package pass pub raise return self static " +
  "struct super switch this throw true try type typeof use var void while with yield True False None " +
  "int float double char bool string str long short unsigned signed auto public private protected"
).split(" "));

const TOKEN = /("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`|\b\d+(?:\.\d+)?\b|\b[A-Za-z_][A-Za-z0-9_]*\b)/g;

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

/** Code as text nodes and classed spans (comments, strings, numbers, keywords). */
export function highlight(code, into) {
  let last = 0;
  for (const m of code.matchAll(TOKEN)) {
    if (m.index > last) into.append(code.slice(last, m.index));
    const t = m[0];
    if (t.startsWith("//") || t.startsWith("#") || t.startsWith("/*")) into.append(span("tok-comment", t));
    else if (/^["'`]/.test(t)) into.append(span("tok-string", t));
    else if (/^\d/.test(t)) into.append(span("tok-number", t));
    else if (KEYWORDS.has(t)) into.append(span("tok-keyword", t));
    else into.append(t);
    last = m.index + t.length;
  }
  if (last < code.length) into.append(code.slice(last));
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1200);
}

function codeBlock(lang, code) {
  const wrap = document.createElement("div");
  wrap.className = "code";
  const bar = document.createElement("div");
  bar.className = "code-bar";
  bar.append(span("code-lang", lang || "text"));
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => copyText(code, copy));
  bar.append(copy);
  const pre = document.createElement("pre");
  const el = document.createElement("code");
  highlight(code, el);
  pre.append(el);
  wrap.append(bar, pre);
  return wrap;
}

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?!\s)([^*]+?)(?<!\s)\*\*|(?<!\w)__(?!\s)([^_]+?)(?<!\s)__(?!\w)|\*(?![\s*])([^*]*?[^*\s])\*|(?<!\w)_(?![\s_])([^_]*?[^_\s])_(?!\w)|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

/** Inline markup of one block's text, appended to ``into``. */
export function inline(text, into) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) into.append(text.slice(last, m.index));
    if (m[1]) {
      into.append(Object.assign(document.createElement("code"), { textContent: m[2] }));
    } else if (m[3] || m[4]) {
      const b = document.createElement("strong");
      inline(m[3] || m[4], b);
      into.append(b);
    } else if (m[5] || m[6]) {
      const i = document.createElement("em");
      inline(m[5] || m[6], i);
      into.append(i);
    } else {
      const a = document.createElement("a");
      a.href = m[8] || m[9];  // only http(s) URLs reach here (the pattern says so)
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
      a.textContent = m[7] || m[9];
      into.append(a);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) into.append(text.slice(last));
}

function paragraph(lines) {
  const p = document.createElement("p");
  lines.forEach((line, i) => {
    if (i) p.append(document.createElement("br"));
    inline(line, p);
  });
  return p;
}

/** A DocumentFragment for ``source``. An unclosed code fence (an answer still streaming) runs to the end. */
export function renderMarkdown(source) {
  const out = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) out.append(paragraph(para));
    para = [];
  };
  const endList = () => { list = null; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/);
    if (fence) {
      flush(); endList();
      const body = [];
      i++;
      const closing = new RegExp(`^\\s*${fence[1][0] === "`" ? "`" : "~"}{${fence[1].length},}\\s*$`);
      while (i < lines.length && !closing.test(lines[i])) body.push(lines[i++]);
      out.append(codeBlock(fence[2], body.join("\n")));
      continue;
    }
    if (!line.trim()) { flush(); endList(); continue; }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flush(); endList();
      const h = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      inline(heading[2], h);
      out.append(h);
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { flush(); endList(); out.append(document.createElement("hr")); continue; }
    const item = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
    if (item) {
      flush();
      const tag = item[1] ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = document.createElement(tag);
        if (item[2] && item[2] !== "1") list.start = Number(item[2]);
        out.append(list);
      }
      const li = document.createElement("li");
      inline(item[3], li);
      list.append(li);
      continue;
    }
    const quote = line.match(/^\s*>\s?(.*)$/);
    if (quote) {
      flush(); endList();
      const q = document.createElement("blockquote");
      inline(quote[1], q);
      out.append(q);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {  // a list item's continuation line
      list.lastElementChild.append(" ");
      inline(line.trim(), list.lastElementChild);
      continue;
    }
    endList();
    para.push(line);
  }
  flush();
  return out;
}
