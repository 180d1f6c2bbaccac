"""Which device an exact index is searched on (the GPU search path itself runs in the vector-index contract
with a CPU stand-in for the GPU copy)."""

from __future__ import annotations

import pytest

from kbservice.index import faiss_gpu


def test_the_cpu_is_used_when_asked_or_when_faiss_sees_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_gpu, "gpu_available", lambda: False)
    assert faiss_gpu.gpu_device("cpu") is None
    assert faiss_gpu.gpu_device("auto") is None


def test_a_gpu_is_used_when_faiss_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_gpu, "gpu_available", lambda: True)
    assert faiss_gpu.gpu_device("auto") == 0
    assert faiss_gpu.gpu_device("cuda") == 0
    assert faiss_gpu.gpu_device("cuda:1") == 1
    assert faiss_gpu.gpu_device("cpu") is None


def test_naming_a_gpu_without_one_or_a_bad_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_gpu, "gpu_available", lambda: False)
    with pytest.raises(ValueError, match="no GPU"):
        faiss_gpu.gpu_device("cuda:0")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        faiss_gpu.gpu_device("tpu")


def test_a_bad_index_device_is_refused_when_the_settings_load() -> None:
    from pydantic import ValidationError

    from kbservice.config import IndexSettings

    assert IndexSettings(device="cuda:1").device == "cuda:1"
    with pytest.raises(ValidationError):
        IndexSettings(device="tpu")
