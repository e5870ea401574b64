"""`lcrag finetune --resume`: a run killed with SIGKILL after a checkpoint continues from it (it does not
start over, and a half-written checkpoint is dropped) and ends with the adapter and card of the full run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LCRAG

pytestmark = pytest.mark.integration
STEPS = 12  # checkpoints every STEPS // 4 steps


def test_a_killed_run_resumes_from_its_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    command = [str(LCRAG), "finetune", "--recipe", "kv_retrieval", "--out", "resumed", "--steps", str(STEPS),
               "--examples", str(STEPS), "--context-tokens", "160", "--model", str(tiny_model_dir),
               "--data-dir", str(tmp_path)]  # fmt: skip
    out = tmp_path / "adapters" / "resumed"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (
        not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json"))
        and time.monotonic() < deadline
    ):
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = [path.parent for path in (out / "checkpoints").glob("checkpoint-*/trainer_state.json")]
    assert saved and not (out / "adapter_config.json").exists()
    done = max(int(path.name.split("-")[1]) for path in saved)
    partial = out / "checkpoints" / f"checkpoint-{done + 1}"
    (partial / "nothing-saved-yet").mkdir(parents=True)  # as a kill in the middle of a save leaves it

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 1 and "continue it with --resume" in again.stderr + again.stdout

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    logged = (resumed.stdout + resumed.stderr).count("'loss':")  # one line per step this process trained
    assert 0 < done < STEPS and logged == STEPS - done
    assert not partial.exists()
    card = json.loads((out / "lcrag_adapter.json").read_text())
    assert card["steps"] == STEPS and (out / "adapter_model.safetensors").is_file()
