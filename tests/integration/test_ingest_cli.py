"""`lcrag ingest` on a folder: a refused file is reported and skipped, and a run killed with SIGKILL midway
resumes to exactly the chunks of a clean run (ids and counts compared)."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_paragraph
from rag.store import Store
from tests.conftest import LCRAG

pytestmark = pytest.mark.integration
FILES = 40
KILL_AFTER = 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "nested").mkdir()
    for i in range(FILES):
        name, *facts = TOWNS[i % len(TOWNS)]
        where = root / "nested" if i % 4 == 0 else root
        (where / f"town-{i:02d}.md").write_text(
            f"# {name} {i}\n\n" + town_paragraph(f"{name}{i}", *facts) * (1 + i % 4)
        )
    (root / "junk.txt").write_bytes(bytes(range(256)) * 4)
    (root / "ignored.bin").write_bytes(b"not a document type")
    return root


def ingest(folder: Path, data_dir: Path, model: Path) -> list[str]:
    return [
        str(LCRAG),
        "ingest",
        str(folder),
        "--collection",
        "towns",
        "--data-dir",
        str(data_dir),
        "--model",
        str(model),
    ]


def chunk_ids(data_dir: Path) -> list[str]:
    store = Store.open(path=str(data_dir / "chroma"))
    return sorted(store.client.get_collection("towns").get(include=[])["ids"])


def test_killed_ingest_resumes_to_exactly_a_clean_ingest(
    folder: Path, tmp_path: Path, default_model_path: Path
) -> None:
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen(
        ingest(folder, killed_dir, default_model_path), stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    stored = 0
    for line in process.stdout:
        stored += line.startswith("added ")
        if stored == KILL_AFTER:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = chunk_ids(killed_dir)
    assert len(partial) > 0

    resumed = subprocess.run(ingest(folder, killed_dir, default_model_path), capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr  # junk.txt is refused every time
    assert resumed.stdout.count("skipped ") >= KILL_AFTER
    assert "junk.txt: junk.txt is not text" in resumed.stderr
    assert f"{FILES} files" in resumed.stdout and "1 refused" in resumed.stdout

    clean = subprocess.run(ingest(folder, clean_dir, default_model_path), capture_output=True, text=True)
    assert clean.returncode == 1 and clean.stdout.count("added ") == FILES
    assert chunk_ids(killed_dir) == chunk_ids(clean_dir)
    documents = Store.open(path=str(killed_dir / "chroma")).documents("towns")
    assert len(documents) == FILES
    assert sum(d.chunks for d in documents) == len(chunk_ids(clean_dir)) == len(set(chunk_ids(clean_dir)))


def test_files_of_one_name_in_two_folders_are_two_documents(tmp_path: Path, default_model_path: Path) -> None:
    root, data_dir = tmp_path / "docs", tmp_path / "data"
    for folder, town in (("a", TOWNS[0]), ("b", TOWNS[1])):
        (root / folder).mkdir(parents=True)
        (root / folder / "README.md").write_text(town_paragraph(*town))
    first = subprocess.run(ingest(root, data_dir, default_model_path), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (root / "b" / "README.md").write_text(town_paragraph(*TOWNS[2]))  # only b's file changes
    second = subprocess.run(ingest(root, data_dir, default_model_path), capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "skipped " in second.stdout and "replaced " in second.stdout
    documents = Store.open(path=str(data_dir / "chroma")).documents("towns")
    assert sorted(d.name for d in documents) == ["a/README.md", "b/README.md"]
    assert sum(d.chunks for d in documents) == len(chunk_ids(data_dir))


def corrupt_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    (data_dir / "chroma").mkdir(parents=True)
    (data_dir / "chroma" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    return data_dir


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_ingest_into_a_store_another_process_holds_fails_at_once(
    tmp_path: Path, default_model_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(town_paragraph(*TOWNS[0]))
    held = Store.open(path=str(tmp_path / "data" / "chroma"))
    refused = subprocess.run(
        ingest(folder, tmp_path / "data", default_model_path), capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert only_line(refused.stderr).startswith("Error: The collection store ")
    assert f"in use by pid {os.getpid()}" in refused.stderr
    held.close()
    assert Store.open(path=str(tmp_path / "data" / "chroma")).list_collections() == []  # nothing written


@pytest.mark.parametrize("command", ["ingest", "serve"])
def test_a_corrupt_store_is_a_one_line_error_naming_the_folder(
    tmp_path: Path, default_model_path: Path, command: str
) -> None:
    data_dir = corrupt_data_dir(tmp_path)
    args = ingest(tmp_path, data_dir, default_model_path) if command == "ingest" else [
        str(LCRAG), "serve", "--data-dir", str(data_dir), "--model", str(default_model_path)]  # fmt: skip
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    line = only_line(refused.stderr)
    assert line.startswith(f"Error: The collection store in {data_dir / 'chroma'} cannot be opened")
    assert "Move the folder away" in line
