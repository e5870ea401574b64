"""The UI in a real browser (Debian's chromium driven by Playwright) against the tiny-model server: sign in
with the API key, create a collection, upload a document, ask, and see both columns fill with answers,
costs and citations; bad input shows a readable line. A screenshot is left in tests/artifacts/."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_paragraph
from tests.conftest import REPO_ROOT, RunningServer
from tests.integration.test_collections_api import api

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
ANSWER_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


DESKTOP = {"width": 1600, "height": 1300}
PHONE = {"width": 390, "height": 844}


@contextmanager
def ui_page(browser, server: RunningServer, viewport: dict[str, int] = DESKTOP) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The UI in a fresh browser context; with an API key, /ui sends it to the login form first."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=viewport)
    tab = context.new_page()
    tab.goto(f"{server.base_url}/ui/")
    if server.api_key:
        expect(tab).to_have_url(f"{server.base_url}/ui/login")
        tab.fill("#key", server.api_key)
        tab.click("#sign-in")
    expect(tab).to_have_url(f"{server.base_url}/ui/")
    expect(tab.locator("#ask")).to_be_visible(timeout=60_000)
    # the page's load event has filled the pickers: act only after it, as a person would
    expect(tab.locator("#model input")).to_have_value(server.model, timeout=60_000)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def page(browser, tiny_server: RunningServer) -> Iterator[object]:  # type: ignore[no-untyped-def]
    with ui_page(browser, tiny_server) as tab:
        yield tab


def create_and_upload(page, name: str, document: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_text("New collection").click()
    page.get_by_label("Name").fill(name)
    page.click("#create-collection")
    expect(page.locator("#status")).to_contain_text(f"Created collection {name}")
    page.set_input_files("#upload input[type=file]", str(document))
    expect(page.locator("#upload-report")).to_contain_text(f"{document.name}: added", timeout=60_000)
    expect(page.locator("#collection-info")).to_contain_text("1 documents")


def ask_and_wait(page, question: str) -> None:  # type: ignore[no-untyped-def]
    """Ask in both columns and wait until each shows its costs (the last update of an answer)."""
    from playwright.sync_api import expect

    page.locator("#question textarea").fill(question)
    page.click("#ask")
    for column in ("a", "b"):
        expect(page.locator(f"#metrics-{column}")).to_contain_text("TTFT", timeout=ANSWER_TIMEOUT_MS)
        expect(page.locator(f"#metrics-{column}")).to_contain_text("prompt")
        expect(page.locator(f"#answer-{column}")).to_contain_text(question)


@pytest.fixture
def brisk_file(tmp_path: Path) -> Path:
    path = tmp_path / "brisk.txt"
    path.write_text(town_paragraph(*TOWNS[1]))
    return path


@pytest.fixture
def cleanup(tiny_server: RunningServer) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    with api(tiny_server) as client:
        for name in names:
            client.delete(f"/v1/collections/{name}")


def test_upload_ask_and_watch_both_columns_answer_with_citations(
    page,
    brisk_file: Path,
    tmp_path: Path,
    cleanup: list[str],  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    cleanup.append("browser-towns")
    create_and_upload(page, "browser-towns", brisk_file)

    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ binary")
    page.set_input_files("#upload input[type=file]", str(bad))
    expect(page.locator("#upload-report")).to_contain_text("unsupported file type .exe", timeout=60_000)

    page.click("#ask")  # no question yet
    expect(page.locator("#status")).to_contain_text("Type a question first.")

    ask_and_wait(page, "What is Brisk known for?")
    expect(page.locator("#status")).to_have_text("")
    expect(page.locator("#citations-a details")).to_have_count(1)
    expect(page.locator("#citations-b .no-citations")).to_contain_text("whole collection")
    page.locator("#citations-a summary").first.click()
    expect(page.locator("#citations-a .chunk")).to_contain_text("blue wool")
    assert "Traceback" not in page.content()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_side_by_side.png"), full_page=True)


def test_evaluate_runs_the_collection_suite_in_the_page(
    page,
    tmp_path: Path,
    cleanup: list[str],  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    from tests.integration.test_eval_collection import town_file

    files = []
    for index, town in enumerate(TOWNS[:5]):
        _, (name, text, _) = town_file(index, *town)
        (tmp_path / name).write_bytes(text)
        files.append(str(tmp_path / name))
    cleanup.append("browser-eval")
    page.get_by_text("New collection").click()
    page.get_by_label("Name").fill("browser-eval")
    page.click("#create-collection")
    expect(page.locator("#status")).to_contain_text("Created collection browser-eval")
    page.set_input_files("#upload input[type=file]", files)
    expect(page.locator("#collection-info")).to_contain_text("5 documents", timeout=60_000)
    page.get_by_text("Evaluate this collection").click()
    page.click("#evaluate-run")
    report = page.locator("#evaluate-report")
    expect(report).to_contain_text("lcrag eval collection browser-eval", timeout=ANSWER_TIMEOUT_MS)
    expect(report.locator("table")).to_contain_text("needle")
    expect(page.locator("#evaluate-plot img")).to_be_visible()
    assert "Traceback" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_evaluate.png"), full_page=True)


def choose(page, dropdown: str, option: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()


def test_documents_view_deletes_after_confirmation_and_chats_survive_a_reload(
    page,
    tmp_path: Path,
    cleanup: list[str],  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    brisk, corvale = tmp_path / "brisk.txt", tmp_path / "corvale.txt"
    brisk.write_text(town_paragraph(*TOWNS[1]))
    corvale.write_text(town_paragraph(*TOWNS[2]))
    cleanup.append("browser-docs")
    create_and_upload(page, "browser-docs", brisk)
    page.set_input_files("#upload input[type=file]", str(corvale))
    expect(page.locator("#collection-info")).to_contain_text("2 documents", timeout=60_000)
    expect(page.locator("#budget")).to_contain_text("LC prompt")
    expect(page.locator("#budget")).to_contain_text("RAG top-5")

    page.get_by_text("Documents", exact=True).click()
    table = page.locator("#documents-table")
    expect(table).to_contain_text("brisk.txt")
    expect(table).to_contain_text("corvale.txt")
    choose(page, "#document-pick", "brisk.txt")
    expect(page.locator("#document-preview")).to_contain_text("chunk 0 · characters 0-")
    page.locator("#document-preview summary").first.click()
    expect(page.locator("#document-preview .chunk")).to_contain_text("blue wool")
    page.click("#delete-document")
    expect(page.locator("#confirm-text")).to_contain_text("Delete brisk.txt from browser-docs?")
    page.click("#cancel-delete")
    expect(page.locator("#confirm-row")).to_be_hidden()
    expect(page.locator("#collection-info")).to_contain_text("2 documents")  # cancel deleted nothing
    page.click("#delete-document")
    page.click("#confirm-delete")
    expect(page.locator("#status")).to_contain_text("Deleted brisk.txt from browser-docs.")
    expect(page.locator("#collection-info")).to_contain_text("1 documents")
    expect(table).not_to_contain_text("brisk.txt")

    ask_and_wait(page, "Which town makes pear cider?")
    # `[n]` links open their citation: a link as the answer renders it, clicked in the real page
    expect(page.locator("#cite-a-1")).not_to_have_attribute("open", "")
    page.evaluate(
        "document.querySelector('#answer-a').insertAdjacentHTML('beforeend', "
        '\'<a id="test-link" href="#cite-a-1">[1]</a>\')'
    )
    page.click("#test-link")
    expect(page.locator("#cite-a-1")).to_have_attribute("open", "")
    expect(page.locator("#cite-a-1 .chunk")).to_contain_text("pear cider")

    page.reload()
    expect(page.locator("#collection input")).to_have_value("browser-docs", timeout=60_000)
    expect(page.locator("#answer-a")).to_contain_text("Which town makes pear cider?", timeout=30_000)
    expect(page.locator("#answer-b")).to_contain_text("Which town makes pear cider?")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui_desktop.png"), full_page=True)
    page.click("#new-chat")
    expect(page.locator("#answer-a")).not_to_contain_text("Which town makes pear cider?")
    page.reload()
    expect(page.locator("#collection input")).to_have_value("browser-docs", timeout=60_000)
    expect(page.locator("#ask")).to_be_visible()
    expect(page.locator('#chats-restored [data-collection="browser-docs"]')).to_have_count(1)
    expect(page.locator("#answer-a")).not_to_contain_text("Which town makes pear cider?")
    assert "Traceback" not in page.content()


def test_the_page_fits_a_phone_screen(browser, tiny_server: RunningServer, cleanup: list[str]) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    with api(tiny_server) as client:
        client.post("/v1/collections", json={"name": "browser-phone"}).raise_for_status()
        files = [("files", ("arlen.txt", town_paragraph(*TOWNS[0]).encode(), "text/plain"))]
        client.post("/v1/collections/browser-phone/documents", files=files).raise_for_status()
    cleanup.append("browser-phone")
    with ui_page(browser, tiny_server, PHONE) as page:
        choose(page, "#collection", "browser-phone")
        ask_and_wait(page, "What is Arlen known for?")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow} px wider than the phone's screen"
        for element in ("#question", "#ask", "#stop", "#answer-a", "#answer-b", "#budget"):
            box = page.locator(element).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, (
                element
            )
        expect(page.locator("#citations-a details")).to_have_count(1)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_phone.png"), full_page=True)


@pytest.mark.real_model
def test_the_default_model_answers_from_the_uploaded_document_in_both_columns(
    browser,
    real_server: RunningServer,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    document = tmp_path / "storeroom.txt"
    document.write_text(
        "The storeroom is on the second floor. The access code is 4817. Deliveries arrive on Mondays."
    )
    try:
        with ui_page(browser, real_server) as page:
            create_and_upload(page, "browser-codes", document)
            page.get_by_text("Settings", exact=True).click()
            page.locator("#max-tokens input[type=number]").fill("16")
            page.locator("#max-tokens input[type=number]").press("Enter")
            ask_and_wait(page, "What is the access code? Answer with the number only.")
            for column in ("a", "b"):
                expect(page.locator(f"#answer-{column}")).to_contain_text("4817")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui_default_model.png"), full_page=True)
    finally:
        with api(real_server) as client:
            client.delete("/v1/collections/browser-codes")


def test_a_compressed_lc_column_shows_what_the_eviction_kept(
    page,
    tmp_path: Path,
    cleanup: list[str],  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    towns = tmp_path / "towns.txt"  # LC: over two 128-token blocks, fits 512 - 128
    towns.write_text("\n\n".join(town_paragraph(*town) for town in TOWNS[:3]))
    cleanup.append("browser-kept")
    create_and_upload(page, "browser-kept", towns)
    page.locator("#compressed-on input").check()
    ask_and_wait(page, "What is Brisk known for?")
    expect(page.locator("#metrics-c")).to_contain_text("TTFT", timeout=ANSWER_TIMEOUT_MS)
    view = page.locator("#citations-c .retention")
    expect(view).to_contain_text("What the eviction kept")
    expect(view.locator(".retention-document")).to_have_count(1)
    view.locator(".retention-document summary").click()
    expect(view.locator(".retention-text")).to_contain_text("Brisk")
    assert view.locator(".retention-chunk").count() >= 1
