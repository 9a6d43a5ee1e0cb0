"""Make docs/webui.png: a real conversation with qwen2.5-coder in the chat page, 1280 x 800.

    python docs/make_webui_screenshot.py
"""

from __future__ import annotations

import pathlib

from playwright.sync_api import expect, sync_playwright

from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    server = ServerProcess(["-m", str(model_path("qwen2")), "-c", "4096", "-np", "2", "-a", "qwen2.5-coder-0.5b"])
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(server.url + "/")
            expect(page.locator("#status")).to_have_text("Ready", timeout=60_000)
            page.click("#toggle-settings")
            page.fill("#set-temperature", "0")
            page.fill("#set-max_tokens", "160")
            page.click("#toggle-settings")
            page.fill("#input", "Write a Python function that tells whether a year is a leap year, and say briefly why "
                                "it works.")
            page.keyboard.press("Enter")
            expect(page.locator("#send")).to_be_visible(timeout=120_000)
            page.screenshot(path=str(pathlib.Path(__file__).with_name("webui.png")))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
