"""Issue 17's bad-input corpus against the tiny-model server: every hostile file gets its own clear answer,
a batch holding one stores nothing, and afterwards the collection holds exactly the readable files."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningServer
from tests.hostile_files import hostile_files

pytestmark = pytest.mark.integration

COLLECTION = "hostile"


@pytest.fixture(scope="module")
def client(tiny_server: RunningServer):
    with httpx.Client(base_url=tiny_server.base_url, headers=tiny_server.headers(), timeout=120) as http:
        assert http.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        yield http
        http.delete(f"/v1/collections/{COLLECTION}")


def upload(client: httpx.Client, files: list[tuple[str, bytes]]) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"/v1/collections/{COLLECTION}/documents", files=parts)


def test_each_hostile_file_gets_its_answer_and_the_collection_holds_exactly_the_readable_ones(
    client: httpx.Client, tiny_server: RunningServer
) -> None:
    corpus = hostile_files()
    refused_names = [f.name for f in corpus if not f.stored]
    batch = upload(client, [(f.name, f.data) for f in corpus])
    assert batch.status_code in {f.status for f in corpus if not f.stored}
    assert client.get(f"/v1/collections/{COLLECTION}/documents").json()["data"] == []  # one bad file: none

    for file in corpus:
        reply = upload(client, [(file.name, file.data)])
        assert reply.status_code == file.status, (file.name, reply.text)
        if not file.stored:
            error = reply.json()["error"]
            assert error["code"] == file.status and error["param"] == "files"
            assert file.expect in error["message"], (file.name, error["message"])
            assert "Traceback" not in error["message"]
    listed = client.get(f"/v1/collections/{COLLECTION}/documents").json()["data"]
    expected = sorted(f.name.rsplit("/", 1)[-1] for f in corpus if f.stored)
    assert sorted(d["name"] for d in listed) == expected
    assert not set(refused_names) & {d["name"] for d in listed}
    by_name = {d["name"]: d["doc_id"] for d in listed}
    for file in (f for f in corpus if f.stored):
        document = client.get(
            f"/v1/collections/{COLLECTION}/documents/{by_name[file.name.rsplit('/', 1)[-1]]}"
        )
        text = document.json()["text"]
        assert file.expect in text, (file.name, text)
        assert "stealCookies" not in text and "alert(1)" not in text
    chunks = sum(d["chunks"] for d in listed)
    assert client.get(f"/v1/collections/{COLLECTION}").json()["chunks"] == chunks  # no orphan chunk
    assert "Traceback" not in tiny_server.log_path.read_text()


def test_two_files_of_one_name_in_one_upload_are_refused(client: httpx.Client) -> None:
    before = client.get(f"/v1/collections/{COLLECTION}/documents").json()["data"]
    reply = upload(client, [("a/twin.txt", b"The first twin."), ("b/twin.txt", b"The second twin.")])
    assert reply.status_code == 400
    assert "Two files in this upload are named twin.txt" in reply.json()["error"]["message"]
    assert client.get(f"/v1/collections/{COLLECTION}/documents").json()["data"] == before
