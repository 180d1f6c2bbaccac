"""The packaged SmolLM2 GGUF converts once into a safetensors cache with identical logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbservice.errors import KBError
from kbservice.llm.model_files import CONVERSION_RECORD, packaged_gguf, resolve_base_model

pytestmark = pytest.mark.slow


def test_packaged_gguf_converts_once_with_identical_logits(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = resolve_base_model(model_path=None, cache_dir=tmp_path)
    record = json.loads((first.path / CONVERSION_RECORD).read_text())
    assert record["max_abs_logit_difference"] == 0.0
    assert (first.path / "model.safetensors").exists()
    assert len(first.sha256) == 64
    # The cache is reused: same directory, same checksum, no second conversion.
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_base_model(model_path=None, cache_dir=tmp_path)
    assert again == first and (first.path / "model.safetensors").stat().st_mtime_ns == stamp
    # Loading the cache gives the GGUF's logits exactly.
    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(first.path))
    ids = tokenizer("Community-acquired pneumonia is treated with", return_tensors="pt").input_ids
    cached = AutoModelForCausalLM.from_pretrained(str(first.path), dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, original(ids).logits)


def test_configured_directory_must_be_a_model(tmp_path: Path) -> None:
    with pytest.raises(KBError, match=r"no config\.json"):
        resolve_base_model(model_path=tmp_path, cache_dir=tmp_path / "cache")


def test_configured_directory_is_used_as_is(tmp_path: Path) -> None:
    from tests.helpers import tiny_llama

    tiny_llama(vocab_size=128).save_pretrained(tmp_path / "tiny-llm")
    model = resolve_base_model(model_path=tmp_path / "tiny-llm", cache_dir=tmp_path / "cache")
    assert model.path == tmp_path / "tiny-llm" and model.name == "tiny-llm"
    assert not (tmp_path / "cache").exists()


def test_models_show_reports_the_configured_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.cli.runner import Cli

    test_configured_directory_is_used_as_is(tmp_path)
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KB_LLM__MODEL_PATH", str(tmp_path / "tiny-llm"))
    shown = Cli(capsys).json("models", "show")
    assert shown["name"] == "tiny-llm" and len(shown["sha256"]) == 64
