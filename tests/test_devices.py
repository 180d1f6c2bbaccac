"""device = "auto": CUDA when present, else the CPU; the CPU path stays float32."""

from __future__ import annotations

import pytest

from kbservice import devices
from kbservice.config import Settings


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert devices.resolve_device("auto") == "cuda"


def test_a_named_device_is_taken_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert devices.resolve_device("cpu") == "cpu"
    assert devices.resolve_device("cuda:1") == "cuda:1"


def test_language_models_run_in_bfloat16_on_cuda_only() -> None:
    assert devices.model_dtype_name("cuda") == devices.model_dtype_name("cuda:0") == "bfloat16"
    assert devices.model_dtype_name("cpu") == "float32"


def test_the_defaults_are_auto(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)
    assert settings.embedder.device == settings.llm.device == "auto"


def test_this_machine_resolves_to_what_torch_sees() -> None:
    import torch

    assert devices.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_onnx_picks_cuda_for_auto_only_when_its_runtime_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from kbservice.index.onnx_embedder import onnx_provider

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_provider("auto") == onnx_provider("cuda:0") == onnx_provider("cpu") == "CPUExecutionProvider"
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_provider("auto") == onnx_provider("cuda") == "CUDAExecutionProvider"
    assert onnx_provider("cpu") == "CPUExecutionProvider"
