"""vLLM's logging config written by lcrag: our format, warnings only, expected CPU notices dropped."""

import json
import logging
import logging.config

from lcrag.logs import ExpectedNoticeFilter, vllm_logging_config_file


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("vllm.x", logging.WARNING, __file__, 1, message, None, None)


def test_expected_cpu_notices_are_dropped_and_other_warnings_kept() -> None:
    keep = ExpectedNoticeFilter()
    assert not keep.filter(record("Enforce eager set, disabling torch.compile"))
    assert not keep.filter(record("Triton is not installed. triton-cpu is expected on x86 CPUs."))
    assert keep.filter(record("Model weights are larger than the KV cache"))


def test_quiet_config_filters_and_debug_config_shows_everything() -> None:
    quiet = json.loads(vllm_logging_config_file(debug=False).read_text())
    debug = json.loads(vllm_logging_config_file(debug=True).read_text())
    assert quiet["loggers"]["vllm"]["level"] == "WARNING" and quiet["handlers"]["stderr"]["filters"] == [
        "expected"
    ]
    assert debug["loggers"]["vllm"]["level"] == "DEBUG" and debug["handlers"]["stderr"]["filters"] == []
    logging.config.dictConfig({**quiet, "loggers": {}})  # the factory path resolves
