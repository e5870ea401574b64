"""The UI screenshots in README.md and docs/ui.md: the bundled model answers one question over six short
documents in RAG and LC, shown at a desktop and at a phone-sized viewport, and the compressed-LC column's
retention view (Debian chromium via Playwright).

    .venv/bin/python -m docs.make_screenshots        # ~3 minutes on 2 cores; writes docs/img/ui_*.png
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.corpus import town_files
from lcrag import local_server
from lcrag.client import connect, replace_collection

IMAGES = Path(__file__).resolve().parent / "img"
QUESTION = "Which town makes pear cider, and when is its festival?"
VIEWPORTS = {"desktop": {"width": 1440, "height": 1000}, "phone": {"width": 390, "height": 844}}


def ask(page: Any, columns: str) -> None:
    """Type the question, ask, and wait until each column in `columns` shows its timings."""
    from playwright.sync_api import expect

    expect(page.locator("#budget")).to_contain_text("LC prompt", timeout=60_000)
    page.locator("#question textarea").fill(QUESTION)
    page.click("#ask")
    for column in columns:
        expect(page.locator(f"#metrics-{column}")).to_contain_text("TTFT", timeout=300_000)


def side_by_side_shots(browser: Any, base_url: str) -> None:
    """RAG and LC answering, at each viewport; the first citation opened."""
    for name, viewport in VIEWPORTS.items():
        page = browser.new_context(viewport=viewport).new_page()
        page.goto(f"{base_url}/ui/")
        ask(page, "ab")
        page.locator("#citations-a summary").first.click()
        page.screenshot(path=str(IMAGES / f"ui_{name}.png"), full_page=name == "phone")
        page.context.close()


def retention_shot(browser: Any, base_url: str) -> None:
    """The compressed-LC column's retention view, its first document opened."""
    page = browser.new_context(viewport=VIEWPORTS["desktop"]).new_page()
    page.goto(f"{base_url}/ui/")
    page.locator("#compressed-on input").check()
    ask(page, "abc")
    page.locator("#citations-c .retention-document summary").first.click()
    page.locator("#citations-c").screenshot(path=str(IMAGES / "ui_retention.png"))
    page.context.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    data_dir = Path(tempfile.mkdtemp(prefix="lcrag-screens-"))
    args = ["--max-model-len", "4096", "--kv-cache-gb", "2", "--data-dir", str(data_dir)]
    process, base_url = local_server.start(args, data_dir / "server.log")
    try:
        with connect(base_url) as http:
            replace_collection(http, "towns", town_files())
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            side_by_side_shots(browser, base_url)
            retention_shot(browser, base_url)
            browser.close()
    finally:
        local_server.stop(process)
    print(f"Wrote {IMAGES}/ui_desktop.png, ui_phone.png and ui_retention.png")


if __name__ == "__main__":
    main()
