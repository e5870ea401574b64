"""The UI's event handlers through `gradio_client`, against the UI mounted on the tiny-model server.

The same calls the page makes: refresh the pickers, create a collection, upload, ask all columns at once,
and the bad inputs (unsupported file, empty question, LC over budget) come back as readable lines.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file

from bench.corpus import TOWNS, town_paragraph
from tests.conftest import RunningServer
from tests.integration.test_collections_api import api
from ui.answers import ANSWERING
from ui.app import COLUMN_KEYS, OUTPUTS_PER_COLUMN
from ui.views import BLANK_ANSWER, WARNING, text_of

pytestmark = pytest.mark.integration


def unchanged(outputs: tuple[Any, ...]) -> bool:
    """Whether every output is gr.skip() (an update without a value, as gradio_client shows it)."""
    return all(o.get("__type__") == "update" and "value" not in o for o in outputs)


@pytest.fixture(scope="module")
def ui(tiny_server: RunningServer) -> Client:
    return Client(f"{tiny_server.base_url}/ui/", headers=tiny_server.headers(), verbose=False)


@pytest.fixture(scope="module")
def town_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-docs") / "brisk.txt"
    path.write_text(town_paragraph(*TOWNS[1]))
    return path


@pytest.fixture(scope="module")
def collection(ui: Client, tiny_server: RunningServer, town_file: Path) -> Iterator[str]:
    picker, status = ui.predict("ui-towns", api_name="/create_collection")
    assert picker["value"] == "ui-towns" and ["ui-towns", "ui-towns"] in picker["choices"]
    assert status == "Created collection **ui-towns**."
    report, info, cleared = ui.predict([handle_file(town_file)], "ui-towns", api_name="/upload")
    assert report.startswith("- **brisk.txt**: added (") and cleared is None
    assert info.startswith("1 documents · ") and "fits LC: yes" in info
    yield "ui-towns"
    with api(tiny_server) as client:
        client.delete("/v1/collections/ui-towns")


Column = tuple[Any, Any, Any, Any]  # chat, metrics, citations, result
COMPRESSION_OFF = (False, "snapkv", 0.75)
# answer tokens, temperature, repetition penalty, top-k, retrieval ("" = the server's), system prompt
SETTINGS = (16, 0.0, 1.0, 5, "", "")


def ask_args(
    question: str,
    collection: str | None,
    modes: tuple[str | None, str | None] = ("rag", "lc"),
    compression: tuple[bool, str, float] = COMPRESSION_OFF,
    chats: tuple[list[Any], list[Any], list[Any]] = ([], [], []),
    one_at_a_time: bool = True,
    settings: tuple[Any, ...] = SETTINGS,
) -> tuple[Any, ...]:
    """The `/ask` inputs: question, collection, model, the settings, the two modes, the compression column's
    switch, policy and ratio, whether the columns answer one after another, then each column's chat."""
    return (question, collection, None, *settings, *modes, *compression, one_at_a_time, *chats)


def by_column(outputs: tuple[Any, ...]) -> tuple[str, dict[str, Column]]:
    """`/ask` outputs as the status line and each column's four outputs."""
    status, *rest = outputs
    n = OUTPUTS_PER_COLUMN
    return status, {key: tuple(rest[n * i : n * (i + 1)]) for i, key in enumerate(COLUMN_KEYS)}  # type: ignore[misc]


def ask(ui: Client, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Column]]:
    return by_column(ui.predict(*ask_args(*args, **kwargs), api_name="/ask"))


def test_refresh_fills_the_pickers_from_the_api(
    ui: Client, collection: str, tiny_server: RunningServer
) -> None:
    collections, models, policies, status = ui.predict(collection, api_name="/refresh")
    assert collections["value"] == collection and [collection, collection] in collections["choices"]
    assert models["value"] == tiny_server.model
    assert not any("@" in name for name, _ in models["choices"])  # docs@rag aliases are not models
    assert policies["value"] == "snapkv" and ["none", "none"] not in policies["choices"]
    assert status == {"__type__": "update"}  # left as it was: a late page load never wipes a message


def test_two_columns_answer_the_same_question_with_costs_and_citations(ui: Client, collection: str) -> None:
    job = ui.submit(*ask_args("What is Brisk known for?", collection, one_at_a_time=False), api_name="/ask")
    status, columns = by_column(job.result())
    assert status == ""
    for key in ("a", "b"):
        chat, metrics, _, result = columns[key]
        assert [m["role"] for m in chat] == ["user", "assistant"]
        assert text_of(chat[0]["content"]) == "What is Brisk known for?"
        assert text_of(chat[1]["content"]) in (result["answer"].strip(), BLANK_ANSWER)  # random model
        assert "**TTFT**" in metrics and "**prompt**" in metrics and "(no eviction)" in metrics
    rag, lc = columns["a"][3], columns["b"][3]
    rag_citations = columns["a"][2]
    assert "<details" in rag_citations and "brisk" in rag_citations and "blue wool" in rag_citations
    assert (rag["mode"], lc["mode"]) == ("rag", "lc") and lc["prompt_tokens"] > 100
    assert unchanged(columns["c"])  # the compression column is off
    updates = [by_column(update)[1] for update in job.outputs()]
    assert len(updates) > 2  # streamed: several updates before the last
    both_answering = [u for u in updates if all(u[key][1] == ANSWERING for key in ("a", "b"))]
    assert both_answering  # one ask: both columns start together, neither waits for the other to finish


def test_a_column_keeps_its_history_for_the_next_question(ui: Client, collection: str) -> None:
    _, columns = ask(ui, "What is Brisk known for?", collection, modes=("rag", None))
    chat = columns["a"][0]
    assert unchanged(columns["b"])  # a column without a mode is left alone
    _, columns = ask(ui, "And its festival?", collection, modes=("rag", None), chats=(chat, [], []))
    chat, _, _, result = columns["a"]
    assert [text_of(m["content"]) for m in chat[::2]] == ["What is Brisk known for?", "And its festival?"]
    assert result["error"] is None


def test_the_settings_reach_every_columns_request(
    ui: Client, collection: str, tiny_server: RunningServer
) -> None:
    corvale = [("files", ("corvale.txt", town_paragraph(*TOWNS[2]).encode(), "text/plain"))]
    with api(tiny_server) as client:
        doc_id = client.post(f"/v1/collections/{collection}/documents", files=corvale).json()["files"][0][
            "doc_id"
        ]
    try:
        plain = ask(ui, "pear cider", collection, settings=(16, 0.0, 1.0, 2, "", ""))[1]
        instructions = "Answer in French, in one short sentence."
        tuned = ask(ui, "pear cider", collection, settings=(16, 0.8, 1.3, 1, "bm25", instructions))[1]
    finally:
        with api(tiny_server) as client:
            client.delete(f"/v1/collections/{collection}/documents/{doc_id}")
    assert len(plain["a"][3]["citations"]) == 2 and len(tuned["a"][3]["citations"]) == 1
    assert "pear cider" in tuned["a"][3]["citations"][0]["text"]  # BM25's first hit for the words
    assert tuned["a"][3]["error"] is None and tuned["b"][3]["error"] is None
    assert tuned["b"][3]["prompt_tokens"] > plain["b"][3]["prompt_tokens"] + 5  # the system prompt is in it
    assert "id='cite-a-1'" in tuned["a"][2]


def test_the_documents_view_lists_and_previews_a_collections_documents(
    ui: Client, collection: str, tiny_server: RunningServer
) -> None:
    with api(tiny_server) as client:
        listed = client.get(f"/v1/collections/{collection}/documents").json()["data"]
    brisk = next(d for d in listed if d["name"] == "brisk.txt")
    assert brisk["characters"] == len(town_paragraph(*TOWNS[1]))
    preview = ui.predict(collection, brisk["doc_id"], api_name="/document")
    assert "chunk 0 · characters 0-" in preview and "blue wool" in preview
    missing = ui.predict(collection, "0123456789abcdef", api_name="/document")
    assert missing.startswith(WARNING)


def test_an_unsupported_file_is_reported_in_the_page(ui: Client, collection: str, tmp_path: Path) -> None:
    tool = tmp_path / "tool.exe"
    tool.write_bytes(b"MZ binary")
    report, info, _ = ui.predict([handle_file(tool)], collection, api_name="/upload")
    assert report.startswith(f"- {WARNING} **tool.exe**: tool.exe: unsupported file type .exe; supported:")
    assert "Traceback" not in report and info.startswith("1 documents")


def upload_to_gradio(server: RunningServer, name: str, data: bytes) -> httpx.Response:
    """What the page does first with a chosen file: put it in Gradio's temporary folder."""
    files = [("files", (name, data, "text/plain"))]
    return httpx.post(
        f"{server.base_url}/ui/gradio_api/upload", files=files, headers=server.headers(), timeout=60
    )


def test_the_uis_copy_of_an_upload_is_deleted_once_stored(
    ui: Client, tiny_server: RunningServer, collection: str
) -> None:
    reply = upload_to_gradio(tiny_server, "ferry.txt", b"The harbour ferry leaves at nine every morning.")
    [temporary] = reply.json()
    assert Path(temporary).is_file()  # the server runs on this machine: its temp folder is ours to look at
    file = {"path": temporary, "orig_name": "ferry.txt", "meta": {"_type": "gradio.FileData"}}
    report, _, _ = ui.predict([file], collection, api_name="/upload")
    assert report.startswith("- **ferry.txt**: added (")
    assert not Path(temporary).exists() and not Path(temporary).parent.exists()
    with api(tiny_server) as client:
        listed = client.get(f"/v1/collections/{collection}/documents").json()["data"]
        doc_id = next(d["doc_id"] for d in listed if d["name"] == "ferry.txt")
        assert client.delete(f"/v1/collections/{collection}/documents/{doc_id}").status_code == 200


def test_the_ui_refuses_an_upload_over_the_limit_before_storing_it(tiny_server: RunningServer) -> None:
    reply = upload_to_gradio(tiny_server, "big.txt", b"a" * 1_100_000)  # the tiny server allows 1 MB
    assert reply.status_code == 413, reply.text


def test_an_empty_question_is_a_status_line_and_asks_nothing(ui: Client, collection: str) -> None:
    status, columns = ask(ui, "  ", collection)
    assert status == f"{WARNING} Type a question first."
    assert all(unchanged(column) for column in columns.values())
    status, columns = ask(ui, "Hi", None)
    assert status.startswith(f"{WARNING} Choose a collection")
    assert all(unchanged(column) for column in columns.values())


def test_lc_over_budget_is_a_readable_message_in_its_column(ui: Client, tiny_server: RunningServer) -> None:
    with api(tiny_server) as client:
        assert client.post("/v1/collections", json={"name": "ui-big"}).status_code == 201
        files = [("files", (f"t{i}.txt", town_paragraph(*TOWNS[i]).encode(), "text/plain")) for i in range(6)]
        assert client.post("/v1/collections/ui-big/documents", files=files).status_code == 200
    try:
        _, columns = ask(ui, "Which town has a bridge?", "ui-big", modes=(None, "lc"))
        chat, metrics, citations, result = columns["b"]
        assert result["error"]["code"] == 400
    finally:
        with api(tiny_server) as client:
            client.delete("/v1/collections/ui-big")
    answer = text_of(chat[-1]["content"])
    assert answer.startswith(WARNING) and "prompt tokens but only 496 are available" in answer
    assert metrics == "**lc** failed (400)" and citations == ""


def test_the_compression_column_runs_only_when_switched_on(ui: Client, collection: str) -> None:
    _, columns = ask(ui, "What is Brisk known for?", collection, modes=(None, None))
    assert unchanged(columns["c"])
    _, columns = ask(
        ui, "What is Brisk known for?", collection, modes=(None, None), compression=(True, "snapkv", 0.75)
    )
    chat, _, _, result = columns["c"]
    assert result["mode"] == "lc:snapkv-0.75"
    assert result["error"] is None and text_of(chat[-1]["content"])
    kv = result["kv"]
    assert kv["policy"] == "snapkv" and kv["tokens_before"] == result["prompt_tokens"]
    assert result["kv_tokens"] == kv["tokens_after"] < kv["tokens_before"]


def test_creating_a_bad_collection_name_says_why(ui: Client) -> None:
    _, status = ui.predict("No", api_name="/create_collection")
    assert status.startswith(WARNING) and "'No'" in status


KINDS_ASKED = ["cloze", "needle"]


def test_evaluate_shows_the_collection_suite_table_and_plot(ui: Client, tiny_server: RunningServer) -> None:
    from tests.integration.test_eval_collection import town_file

    with api(tiny_server) as client:
        client.post("/v1/collections", json={"name": "ui-eval"}).raise_for_status()
        files = [town_file(i, *town) for i, town in enumerate(TOWNS[:5])]
        client.post("/v1/collections/ui-eval/documents", files=files).raise_for_status()
    try:
        report, plot = ui.predict("ui-eval", None, 1, 2, KINDS_ASKED, "knorm", 0.5, api_name="/evaluate")
        nothing, no_plot = ui.predict("ui-eval", None, 1, 2, [], "knorm", 0.5, api_name="/evaluate")
    finally:
        with api(tiny_server) as client:
            client.delete("/v1/collections/ui-eval")
    assert report.startswith("`lcrag eval collection ui-eval --questions 1 --kinds cloze needle --top-k 2")
    for kind in KINDS_ASKED:
        for mode in ("rag@2", "lc", "lc:knorm-0.5", "auto"):
            assert f"| {kind} | {mode} | 1 |" in report
    assert "| quote |" not in report and Path(plot).stat().st_size > 0
    assert nothing.startswith(WARNING) and "at least one question kind" in nothing and no_plot is None


def test_evaluating_a_collection_too_small_says_why(ui: Client, collection: str) -> None:
    report, plot = ui.predict(collection, None, 1, 2, ["cloze"], "knorm", 0.5, api_name="/evaluate")
    assert report.startswith(WARNING) and "too small to hold questions out" in report and plot is None
