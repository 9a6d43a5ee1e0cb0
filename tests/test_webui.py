"""The chat page at ``/``, driven in Debian's headless Chromium (Playwright) against a real ``lamina serve``.

Each test opens a fresh browser context (its own localStorage) on the page, works it as a user
would — typing, clicking, reloading — and checks what the page shows and what it stored, and,
where the server's answer matters, compares it with the same request sent to the API directly.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from lamina.server import webui
from lamina.testing.server_process import ServerProcess

CHROMIUM = "/usr/bin/chromium"
# flags for a machine with no network and no display (see the environment notes)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>[link](javascript:window.__pwned=3)'


@pytest.fixture(scope="module")
def server(model_paths):
    proc = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "4096", "-np", "2", "-a", "smollm2"])
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    open_page(page, server.url)
    yield page
    assert page.errors == []
    context.close()


def open_page(page: Page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("#status")).to_have_text("Ready", timeout=30_000)


def set_settings(page: Page, **values) -> None:
    if page.locator("#settings").is_hidden():
        page.click("#toggle-settings")
    for name, value in values.items():
        page.fill(f"#set-{name}", str(value))
    page.click("#toggle-settings")


def ask(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def watch_streaming(page: Page) -> None:
    """Record the first text the streaming answer showed (a check after the end would be too late)."""
    page.evaluate("""() => {
        window.__partial = null;
        new MutationObserver(() => {
            const el = document.querySelector('.msg.assistant.streaming .body');
            if (el && el.textContent && window.__partial === null) window.__partial = el.textContent;
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    }""")


def wait_until_idle(page: Page, timeout: float = 60_000) -> None:
    expect(page.locator("#send")).to_be_visible(timeout=timeout)


def stored(page: Page) -> list[dict]:
    return json.loads(page.evaluate("localStorage.getItem('lamina.conversations')"))


def api_answer(server, messages: list[dict], max_tokens: int) -> str:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                   json={"messages": messages, "temperature": 0, "max_tokens": max_tokens})
    return r.json()["choices"][0]["message"]["content"]


# -- a conversation ---------------------------------------------------------------------------------------------
def test_a_message_gets_the_streamed_answer_the_api_gives(page, server):
    set_settings(page, temperature=0, max_tokens=32)
    watch_streaming(page)
    ask(page, "What is the capital of France?")
    wait_until_idle(page)
    assert page.evaluate("window.__partial") is not None  # an unfinished answer was on screen while it streamed
    expected = api_answer(server, [{"role": "user", "content": "What is the capital of France?"}], 32)
    (conv,) = stored(page)
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["content"] == expected
    assert conv["title"] == "What is the capital of France?"
    foot = page.locator(".msg.assistant .timings").inner_text()
    assert "tokens/s" in foot and "first token after" in foot  # from the server's timings


def test_stop_ends_the_answer_and_frees_the_slot(page, server):
    set_settings(page, max_tokens=1500)
    ask(page, "Write a very long story about a lighthouse keeper.")
    expect(page.locator(".msg.assistant.streaming")).to_have_count(1, timeout=30_000)
    time.sleep(0.5)
    page.click("#stop")
    wait_until_idle(page)
    expect(page.locator(".msg.assistant .note")).to_have_text("stopped")
    deadline = time.monotonic() + 5
    while any(s["is_processing"] for s in httpx.get(server.url + "/slots").json()):
        assert time.monotonic() < deadline, "the slot is still generating after Stop"
        time.sleep(0.05)
    assert stored(page)[0]["messages"][1]["content"]  # what had arrived is kept


def test_regenerate_replaces_the_last_answer(page, server):
    set_settings(page, temperature=0, max_tokens=16)
    ask(page, "Name a colour.")
    wait_until_idle(page)
    first = stored(page)[0]["messages"]
    watch_streaming(page)
    page.click(".msg.assistant .regenerate")
    wait_until_idle(page)
    assert page.evaluate("window.__partial") is not None
    again = stored(page)[0]["messages"]
    assert len(again) == 2 and again[1]["content"] == first[1]["content"]  # greedy: the same answer


def test_editing_a_message_drops_what_followed_and_answers_again(page, server):
    set_settings(page, temperature=0, max_tokens=16)
    ask(page, "Say hello.")
    wait_until_idle(page)
    ask(page, "Now say goodbye.")
    wait_until_idle(page)
    page.locator(".msg.user .edit").first.click()
    page.fill(".edit-box", "What is 2 + 2?")
    page.click(".edit-send")
    wait_until_idle(page)
    messages = stored(page)[0]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "What is 2 + 2?"
    assert messages[1]["content"] == api_answer(server, [{"role": "user", "content": "What is 2 + 2?"}], 16)


def test_a_reload_keeps_the_conversations(page, server):
    set_settings(page, max_tokens=8)
    ask(page, "Remember this conversation.")
    wait_until_idle(page)
    page.click("#new-chat")
    ask(page, "And this one.")
    wait_until_idle(page)
    page.reload()
    expect(page.locator("#conversations li")).to_have_count(2)
    expect(page.locator(".msg.user .body")).to_have_text("And this one.")
    page.locator("#conversations .title", has_text="Remember this").click()
    expect(page.locator(".msg.user .body")).to_have_text("Remember this conversation.")
    assert page.input_value("#set-max_tokens") == "8"  # settings are kept too


def test_rename_delete_export_and_import(page, server, tmp_path):
    set_settings(page, max_tokens=4)
    ask(page, "First chat")
    wait_until_idle(page)
    page.click("#conversations .rename")
    page.fill(".rename-input", "Renamed")
    page.keyboard.press("Enter")
    expect(page.locator("#conversations .title")).to_have_text("Renamed")
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "export.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())[0]["title"] == "Renamed"
    page.click("#conversations .delete")
    expect(page.locator("#conversations li")).to_have_count(0)
    page.set_input_files("#import", str(exported))
    expect(page.locator("#conversations .title")).to_have_text("Renamed")
    expect(page.locator(".msg.user .body")).to_have_text("First chat")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    page.set_input_files("#import", str(bad))
    expect(page.locator("#status")).to_contain_text("Could not import bad.json")


MARKDOWN = """# Title

Some **bold**, *italic*, `inline code` and a [link](https://example.com/x), snake_case_name kept.

- one
- two

1. first
2. second

> a quote

```python
def f(x):
    return x + 1  # comment
```

~~~
```python inside a tilde fence stays code
~~~

$E = mc^2$ stays as text.
"""


def test_answers_are_rendered_as_markdown(page, tmp_path):
    chat = tmp_path / "md.json"
    chat.write_text(json.dumps([{"title": "md", "messages": [{"role": "user", "content": "show markdown"},
                                                             {"role": "assistant", "content": MARKDOWN}]}]))
    page.set_input_files("#import", str(chat))
    body = page.locator(".msg.assistant .body")
    expect(body.locator("h3")).to_have_text("Title")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("em")).to_have_text("italic")
    expect(body.locator("p code")).to_have_text("inline code")
    expect(body.locator("a")).to_have_attribute("href", "https://example.com/x")
    expect(body.locator("ul li")).to_have_count(2)
    expect(body.locator("ol li")).to_have_count(2)
    expect(body.locator("blockquote")).to_have_text("a quote")
    expect(body.locator(".code pre").first).to_have_text("def f(x):\n    return x + 1  # comment")
    expect(body.locator(".code pre").nth(1)).to_have_text("```python inside a tilde fence stays code")
    expect(body.locator(".code .tok-keyword").first).to_have_text("def")
    expect(body.locator(".code .tok-comment")).to_have_text("# comment")
    expect(body).to_contain_text("snake_case_name kept")
    expect(body).to_contain_text("$E = mc^2$ stays as text.")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    body.locator(".code .copy").first.click()
    expect(body.locator(".code .copy").first).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "def f(x):\n    return x + 1  # comment"


# -- nothing in a message runs -------------------------------------------------------------------------------------
def assert_nothing_ran(page: Page) -> None:
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#messages img, #messages script, #messages [onerror]").count() == 0
    assert page.locator("#messages a[href^='javascript']").count() == 0


def test_markup_in_a_streamed_answer_shows_as_text(page):
    chunk = {"choices": [{"index": 0, "delta": {"content": XSS}, "finish_reason": None}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=200, body=body,
                                                                    content_type="text/event-stream"))
    ask(page, "anything")
    wait_until_idle(page)
    expect(page.locator(".msg.assistant .body")).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(page.locator(".msg.assistant .body")).to_contain_text("<script>window.__pwned=2</script>")
    assert_nothing_ran(page)


def test_streams_with_crlf_framing_and_no_final_blank_line_are_read(page):
    chunks = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in ("Hel", "lo")]
    body = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks) + "data: [DONE]"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=200, body=body,
                                                                    content_type="text/event-stream"))
    ask(page, "anything")
    wait_until_idle(page)
    expect(page.locator(".msg.assistant .body")).to_have_text("Hello")


def test_damaged_storage_does_not_stop_the_page(page, server):
    page.evaluate("localStorage.setItem('lamina.conversations', '{}'); localStorage.setItem('lamina.settings', '7')")
    page.reload()
    expect(page.locator("#status")).to_have_text("Ready", timeout=30_000)
    set_settings(page, max_tokens=4)
    ask(page, "still working?")
    wait_until_idle(page)
    assert len(stored(page)[0]["messages"]) == 2


def test_markup_typed_or_imported_shows_as_text(page, tmp_path):
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps([{"title": XSS, "messages": [{"role": "user", "content": XSS},
                                                            {"role": "assistant", "content": XSS + "\n\n```\n" + XSS}]}]))
    page.set_input_files("#import", str(evil))
    expect(page.locator(".msg.user .body")).to_have_text(XSS)
    expect(page.locator("#conversations .title")).to_have_text(XSS)
    assert_nothing_ran(page)


# -- the server's state ---------------------------------------------------------------------------------------------
def test_loading_and_busy_servers_are_explained(page):
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=503, content_type="application/json", headers={"Retry-After": "1"},
        body=json.dumps({"error": {"code": 503, "message": "the server is busy", "type": "unavailable_error"}})))
    ask(page, "hello")
    expect(page.locator("#status")).to_contain_text("busy")
    page.route("**/health", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body=json.dumps({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})))
    page.reload()
    expect(page.locator("#status")).to_contain_text("loading the model")


def test_a_server_that_is_gone_is_reported(browser, model_paths):
    proc = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "512", "-np", "1", "--api-key", "page-key"])
    context = browser.new_context()
    try:
        proc.wait_ready()
        page = context.new_page()
        page.goto(proc.url + "/")  # the page itself is public; the API is not
        expect(page.locator("#status")).to_contain_text("needs an API key", timeout=30_000)
        page.fill("#api-key", "page-key")
        set_settings(page, max_tokens=4)
        ask(page, "hello")
        wait_until_idle(page)
        assert page.locator(".msg.assistant .timings").count() == 1
        proc.stop()
        ask(page, "are you there?")
        expect(page.locator("#status")).to_contain_text("cannot be reached", timeout=15_000)
    finally:
        proc.stop()
        context.close()


# -- size, layout, headers ------------------------------------------------------------------------------------------
def test_the_page_is_small_and_self_contained(server):
    assert webui.total_size() < 200_000
    index = httpx.get(server.url + "/")
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    for name in webui.FILES:
        r = httpx.get(server.url + "/webui/" + name)
        assert r.status_code == 200 and r.headers["content-security-policy"] == csp
        assert "http://" not in r.text and "https://" not in r.text.replace("https?:", "")  # nothing from elsewhere
    assert httpx.get(server.url + "/webui/../state.py").status_code == 404
    assert httpx.get(server.url + "/webui/secret.txt").status_code == 404


@pytest.mark.parametrize("width,height", [(375, 740), (1280, 800)])
def test_the_page_fits_narrow_and_wide_windows(browser, server, tmp_path, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_page(page, server.url)
    set_settings(page, temperature=0, max_tokens=48)
    ask(page, "Write a Python function that adds two numbers.")
    wait_until_idle(page)
    page.wait_for_timeout(300)  # the sidebar's slide, at the narrow width
    page.screenshot(path=str(tmp_path / f"page-{width}.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    for selector in ("#input", "#send", "#toggle-settings", ".msg.assistant"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, selector
    if width < 720:  # the conversation list slides in over the chat
        expect(page.locator("#sidebar")).to_be_hidden()  # off-screen and out of the tab order
        page.click("#open-sidebar")
        page.wait_for_timeout(300)
        expect(page.locator("#sidebar")).to_be_visible()
        assert page.locator("#sidebar").bounding_box()["x"] >= 0
    context.close()


def test_no_webui_turns_the_page_off(model_paths):
    proc = ServerProcess(["-m", str(model_paths["smollm2"]), "-c", "512", "-np", "1", "--no-webui"])
    try:
        proc.wait_ready()
        assert httpx.get(proc.url + "/").status_code == 404
        assert httpx.get(proc.url + "/webui/app.js").status_code == 404
    finally:
        proc.stop()
