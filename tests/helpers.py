"""Small builders shared by tests."""

from __future__ import annotations

from pathlib import Path

from kbservice.ingest.guidelines import ingest_guidelines
from kbservice.services import Services
from kbservice.types import CaseRecord, IngestReport
from tests.conftest import write


def ingest(services: Services, *paths: Path, **kwargs) -> IngestReport:  # type: ignore[no-untyped-def]
    kwargs.setdefault("author", "tester")
    return ingest_guidelines(
        list(paths),
        store=services.store,
        embedder=services.embedder,
        replica=services.replica,
        settings=services.settings,
        **kwargs,
    )


def ingest_case_file(services: Services, path: Path, **kwargs) -> IngestReport:  # type: ignore[no-untyped-def]
    from kbservice.ingest.cases import ingest_cases

    kwargs.setdefault("author", "tester")
    return ingest_cases(
        path,
        store=services.store,
        embedder=services.embedder,
        replica=services.replica,
        settings=services.settings,
        **kwargs,
    )


def cases_jsonl(folder: Path, name: str, *records: dict) -> Path:
    import json

    return write(folder / name, "".join(json.dumps(r) + "\n" for r in records))


def guideline(folder: Path, name: str, title: str, body: str) -> Path:
    return write(folder / name, f"# {title}\n\n{body}\n")


def store_fingerprint(services: Services) -> tuple:
    """Everything a failed command must leave untouched: versions, documents, chunk count, index manifest."""
    store = services.store
    versions = [(v.version, v.content_hash, v.documents, v.chunks) for v in store.versions()]
    head = store.head()
    docs = [(d.document_id, d.content_hash) for d in store.documents(as_of=head.version, kind=None)] if head else []
    manifest = services.settings.index_dir / "manifest.json"
    return (
        versions,
        docs,
        store.chunk_count(),
        store.max_outbox_seq(),
        (manifest.read_text() if manifest.exists() else None),
    )


def tiny_llama(vocab_size: int):  # type: ignore[no-untyped-def]
    """A randomly initialised 2-layer Llama (seeded): fast where a test needs mechanics, not language."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


# The promotion gate with its margins opened wide, so that only the poisoning guard could still reject: for
# tests about what happens after a promotion (aliases, rollback, serving, the next cycle). On the tiny random
# model a candidate's scores are noise, and with the real margins it would pass or fail by chance. The gate
# itself is tested in tests/learn/test_gate.py, and on real data in tests/learn/test_update_cycle.py.
WIDE_GATE = {"f1_margin": 1.0, "class_margin": 1.0, "ece_margin": 1.0}
WIDE_GATE_ENV = {f"KB_LEARN__{name.upper()}": str(value) for name, value in WIDE_GATE.items()}
WIDE_IMAGE_GATE = {"encoder_f1_margin": 1.0, "encoder_accuracy_margin": 1.0}


def case_record(case_id: int, diagnosis: str, *, findings: str = "", chunk_id: int | None = None) -> CaseRecord:
    """A stored case built in memory (no database): for tests of code that reads `CaseRecord`s."""
    return CaseRecord(
        case_id=case_id,
        id=f"c{case_id}",
        findings=findings,
        history=None,
        age=None,
        sex=None,
        diagnosis=[diagnosis],
        treatment=None,
        images=[],
        labeled_by=None,
        version_added=1,
        document_id=case_id,
        chunk_id=case_id if chunk_id is None else chunk_id,
        content_hash="",
    )
