"""Collections in real Chroma with the real MiniLM embedder: ingest, idempotence, replacement, crash
safety, retrieval with citations, MMR, and LC assembly in upload order."""

from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_paragraph, towns_text
from rag import store as store_module
from rag.context import check_fits, count_prompt_tokens, lc_documents, lc_messages, rag_messages
from rag.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ContextTooLongError,
    DocumentNotFoundError,
    InvalidCollectionNameError,
)
from rag.ingest import Ingestor
from rag.loaders import load_bytes
from rag.retrieve import RetrievalOptions, retrieve
from rag.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["embedded", "chroma-server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Every test runs twice: on embedded Chroma and on a real `chroma run` server."""
    if request.param == "embedded":
        return Store.open(path=str(tmp_path / "chroma"))
    remote = Store.open(url=request.getfixturevalue("chroma_server_url"))
    for name in remote.list_collections():
        remote.client.delete_collection(name)
    return remote


@pytest.fixture
def ingestor(store: Store, embedder, tokenizer) -> Ingestor:
    store.create_collection("towns")
    return Ingestor(store, embedder, tokenizer, chunk_tokens=64, overlap_tokens=8)


def town_file(i: int) -> tuple[str, bytes]:
    name, *_ = TOWNS[i]
    return f"{name.lower()}.txt", town_paragraph(*TOWNS[i]).encode()


def ingest_towns(ingestor: Ingestor) -> None:
    for i in range(len(TOWNS)):
        ingestor.add("towns", load_bytes(*town_file(i)))


def snapshot(store: Store) -> tuple[int, list[str]]:
    return store.count_chunks("towns"), [d.doc_id for d in store.documents("towns")]


def test_collection_names_follow_chromas_rules(store: Store) -> None:
    for bad in ["ab", "Docs", "-docs", "docs-", "a" * 64, "my docs", "../x"]:
        with pytest.raises(InvalidCollectionNameError, match="3-63 characters"):
            store.create_collection(bad)
    store.create_collection("a_b-9")
    with pytest.raises(CollectionExistsError):
        store.create_collection("a_b-9")
    assert store.list_collections() == ["a_b-9"]
    store.delete_collection("a_b-9")
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        store.delete_collection("a_b-9")


def test_documents_are_listed_in_upload_order_with_their_counts(store: Store, ingestor: Ingestor) -> None:
    ingest_towns(ingestor)
    docs = store.documents("towns")
    assert [d.name for d in docs] == [town_file(i)[0] for i in range(len(TOWNS))]
    assert all(d.chunks >= 1 and d.tokens > 50 for d in docs)
    assert store.count_chunks("towns") == sum(d.chunks for d in docs)


def test_reingesting_the_same_file_adds_nothing(store: Store, ingestor: Ingestor) -> None:
    ingest_towns(ingestor)
    before = snapshot(store)
    result = ingestor.add("towns", load_bytes("copy-of-arlen.txt", town_file(0)[1]))
    assert result.status == "skipped"
    assert snapshot(store) == before


def test_a_changed_file_replaces_its_old_version_in_place(store: Store, ingestor: Ingestor) -> None:
    ingest_towns(ingestor)
    old = store.documents("towns")[1]
    result = ingestor.add(
        "towns", load_bytes("brisk.txt", b"The town of Brisk now trades only in silver spoons.")
    )
    assert result.status == "replaced"
    docs = store.documents("towns")
    assert docs[1].name == "brisk.txt" and docs[1].doc_id == result.doc_id != old.doc_id
    assert len(docs) == len(TOWNS)
    with pytest.raises(DocumentNotFoundError):
        store.delete_document("towns", old.doc_id)


def test_deleting_a_document_removes_all_its_chunks(store: Store, ingestor: Ingestor) -> None:
    ingest_towns(ingestor)
    doomed = store.documents("towns")[2]
    count = store.count_chunks("towns")
    store.delete_document("towns", doomed.doc_id)
    assert store.count_chunks("towns") == count - doomed.chunks
    assert doomed.doc_id not in [d.doc_id for d in store.documents("towns")]


def test_an_interrupted_ingest_lists_nothing_half_and_resumes_to_a_clean_result(
    store: Store,
    ingestor: Ingestor,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    embedder,
    tokenizer,
) -> None:
    long_doc = load_bytes("all-towns.txt", (towns_text() + "\n\n").encode() * 2)
    real_upsert = store_module._upsert

    def crash_on_head(collection, records, embeddings) -> None:
        if records[0]["id"].endswith(":0"):
            raise KeyboardInterrupt  # killed after the tail was stored, before the head
        real_upsert(collection, records, embeddings)

    monkeypatch.setattr(store_module, "_upsert", crash_on_head)
    with pytest.raises(KeyboardInterrupt):
        ingestor.add("towns", long_doc)
    assert store.documents("towns") == [] and store.chunks("towns") == []
    assert store.count_chunks("towns") > 0  # orphaned tail chunks exist but are not used
    assert retrieve(store, embedder, "towns", "Which town is known for pear cider?", k=3) == []

    monkeypatch.setattr(store_module, "_upsert", real_upsert)
    assert ingestor.add("towns", long_doc).status == "added"
    clean = Store.open(path=str(tmp_path / "clean"))
    clean.create_collection("towns")
    Ingestor(clean, embedder, tokenizer, chunk_tokens=64, overlap_tokens=8).add("towns", long_doc)
    ids = sorted(store.client.get_collection("towns").get(include=[])["ids"])
    assert ids == sorted(clean.client.get_collection("towns").get(include=[])["ids"])
    assert len(ids) == len(set(ids)) == store.documents("towns")[0].chunks


def test_retrieval_finds_the_passage_and_cites_it(store: Store, ingestor: Ingestor, embedder) -> None:
    ingest_towns(ingestor)
    hits = retrieve(store, embedder, "towns", "Which town has an observatory on the hill?", k=3)
    assert [h.number for h in hits] == [1, 2, 3]
    assert "observatory" in hits[0].text and hits[0].title == "corvale"
    assert hits[0].score > hits[1].score >= hits[2].score
    assert 0.0 < hits[0].score <= 1.0 and hits[0].end > hits[0].start
    only_dunmere = store.documents("towns")[3].doc_id
    filtered = retrieve(store, embedder, "towns", "observatory", k=2, doc_id=only_dunmere)
    assert {h.doc_id for h in filtered} == {only_dunmere}


def test_mmr_spreads_results_over_more_documents(store: Store, ingestor: Ingestor, embedder) -> None:
    ingest_towns(ingestor)
    question = "What does the town council repair every decade?"
    plain = retrieve(store, embedder, "towns", question, k=4)
    diverse = retrieve(store, embedder, "towns", question, k=4, options=RetrievalOptions(mmr_lambda=0.3))
    assert len(diverse) == 4
    assert len({h.doc_id for h in diverse}) >= len({h.doc_id for h in plain})
    assert len({(h.doc_id, h.chunk_index) for h in diverse}) == 4


def test_lc_context_is_the_whole_collection_in_upload_order(
    store: Store, ingestor: Ingestor, tokenizer
) -> None:
    ingest_towns(ingestor)
    documents = lc_documents(store, "towns")
    assert [d.title for d in documents] == [name.lower() for name, *_ in TOWNS]
    assert [d.text for d in documents] == [town_paragraph(*town) for town in TOWNS]
    messages = lc_messages("Where is the clock tower?", documents)
    user = messages[-1]["content"]
    assert user.index("Document 1: arlen") < user.index("Document 6: fenwick") < user.index("Question:")
    tokens = count_prompt_tokens(tokenizer, messages)
    assert tokens > sum(d.tokens for d in store.documents("towns"))
    check_fits(tokens, max_model_len=8192, answer_tokens=256)
    with pytest.raises(ContextTooLongError) as error:
        check_fits(tokens, max_model_len=512, answer_tokens=256)
    assert f"needs {tokens} prompt tokens but only 256 are available" in str(error.value)
    assert "use mode 'rag'" in str(error.value)


def test_rag_prompt_numbers_passages_and_puts_the_question_last(
    store: Store, ingestor: Ingestor, embedder
) -> None:
    ingest_towns(ingestor)
    hits = retrieve(store, embedder, "towns", "red sails", k=2)
    user = rag_messages("Which mill has red sails?", hits)[-1]["content"]
    assert user.startswith("Passages:\n\n[1] ") and "\n\n[2] " in user
    assert user.rstrip().endswith("Question: Which mill has red sails?")


def test_unknown_collection_is_reported_by_name(store: Store) -> None:
    with pytest.raises(CollectionNotFoundError, match="'nothing-here'"):
        store.documents("nothing-here")


def test_concurrent_uploads_of_one_file_name_leave_one_document(store: Store, ingestor: Ingestor) -> None:
    from concurrent.futures import ThreadPoolExecutor

    versions = [load_bytes("notes.txt", f"Version {i} of the harbour notes.".encode()) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda document: ingestor.add("towns", document), versions))
    assert sorted(r.status for r in results) == ["added", *["replaced"] * 5]
    listed = store.documents("towns")
    assert [d.name for d in listed] == ["notes.txt"]
    assert store.count_chunks("towns") == listed[0].chunks  # no chunk of a replaced version is left


def test_leftovers_of_an_interrupted_ingest_are_removed(
    store: Store, ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor.add("towns", load_bytes(*town_file(0)))
    kept = snapshot(store)
    real_upsert = store_module._upsert

    def crash_on_head(collection, records, embeddings) -> None:
        if records[0]["id"].endswith(":0"):
            raise KeyboardInterrupt
        real_upsert(collection, records, embeddings)

    monkeypatch.setattr(store_module, "_upsert", crash_on_head)
    with pytest.raises(KeyboardInterrupt):
        ingestor.add("towns", load_bytes("all-towns.txt", towns_text().encode()))
    leftovers = store.count_chunks("towns") - kept[0]
    assert leftovers > 0
    if store.shared:  # another process may be writing those chunks: only old leftovers go
        assert store.remove_incomplete("towns") == 0
        assert store.remove_incomplete("towns", older_than_s=-60) == leftovers
    else:
        assert store.remove_incomplete("towns") == leftovers
    assert snapshot(store) == kept


def test_a_second_process_on_one_embedded_store_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    opener = f"from rag.store import Store; Store.open(path={str(tmp_path / 'chroma')!r})"
    held = Store.open(path=str(tmp_path / "chroma"))
    second = subprocess.run([sys.executable, "-c", opener], capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith("rag.errors.StoreInUseError: The collection store ")
    assert f"is in use by pid {os.getpid()}" in last and "--chroma-url" in last
    held.close()
    after = subprocess.run([sys.executable, "-c", opener], capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr


def test_a_corrupt_store_is_one_error_naming_the_folder(tmp_path: Path) -> None:
    from rag.errors import StoreUnreadableError

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnreadableError, match=f"The collection store in {folder} cannot be opened"):
        Store.open(path=str(folder))
