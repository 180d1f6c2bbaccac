"""Real parts on temp data dirs: a real SQLite file, the real PostgreSQL server, the packaged embedder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _share_the_cores_among_xdist_workers() -> None:
    """Under pytest-xdist (`make test`) each worker takes its share of the cores, before torch is imported:
    otherwise torch and ONNX Runtime start one thread per core in every worker, and oversubscribed OpenMP
    threads spin. Measured on 2 cores: 2 workers at 2 threads each took 1,369 s against 973 s for one
    process; at 1 thread each 681 s against 1,006 s. The `kbservice` processes that tests start inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        os.environ.setdefault("OMP_NUM_THREADS", share)
        os.environ.setdefault("MKL_NUM_THREADS", share)


_share_the_cores_among_xdist_workers()

# Imported after the thread share is set: nothing may import torch before it.
from kbservice.config import IndexSettings, IngestSettings, Settings  # noqa: E402
from kbservice.services import Services, build_services, initialise  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("KB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEMO_GUIDELINES = REPO_ROOT / "kbservice" / "demo" / "guidelines"


def _postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_ok() -> bool:
    available = _postgres_available()
    if not available and os.environ.get("CI"):
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI (.ci/run starts it)")
    return available


@pytest.fixture
def postgres_url(postgres_ok: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not postgres_ok:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    import psycopg

    name = f"kbtest_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def make_settings(data_dir: Path, database_url: str | None = None, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        index=IndexSettings(exact_below=5000),
        ingest=IngestSettings(max_file_mb=5),
        **overrides,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Initialised services on a fresh database and data dir; the embedder is the packaged MiniLM."""
    initialise(settings)
    built = build_services(settings)
    yield built
    built.close()


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer BERT sentence-transformer (MiniLM's vocabulary): fast, not semantic."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kbservice.index.embedder import packaged_model_dir

    root = tmp_path_factory.mktemp("tiny-embedder")
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = models.Transformer(str(root / "bert"), max_seq_length=256)
    pooling = models.Pooling(transformer.get_embedding_dimension())
    SentenceTransformer(modules=[transformer, pooling]).save(str(root / "tiny"))
    return root / "tiny"


@pytest.fixture(scope="session")
def onnx_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the session (an export takes seconds; every test would repeat it)."""
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(scope="session", autouse=True)
def shared_onnx_exports(onnx_export_dir: Path) -> Iterator[None]:
    """The default embedder runs an ONNX export made once per data directory; every test has its own data
    directory, so the session shares one export folder instead (through the environment, which the
    `kbservice` processes that tests start inherit). A test that sets its own still wins."""
    previous = os.environ.get("KB_EMBEDDER__EXPORT_DIR")
    os.environ["KB_EMBEDDER__EXPORT_DIR"] = str(onnx_export_dir)
    yield
    if previous is None:
        os.environ.pop("KB_EMBEDDER__EXPORT_DIR", None)
    else:
        os.environ["KB_EMBEDDER__EXPORT_DIR"] = previous


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


DEMO_CASES = REPO_ROOT / "kbservice" / "demo" / "cases.jsonl"


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's real tokenizer and chat template: the whole
    recommendation pipeline runs in milliseconds; the language is nonsense, the mechanics are real."""
    from transformers import AutoTokenizer

    from kbservice.llm.model_files import packaged_gguf
    from tests.helpers import tiny_llama

    folder = tmp_path_factory.mktemp("tiny-smollm")
    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def rec_services(tmp_path: Path, database_url: str, tiny_lm_dir: Path) -> Iterator[Services]:
    """Services whose language model is the tiny Llama (the embedder is still the packaged MiniLM)."""
    from kbservice.config import LLMSettings

    built_settings = make_settings(tmp_path / "data", database_url, llm=LLMSettings(model_path=tiny_lm_dir))
    initialise(built_settings)
    built = build_services(built_settings)
    yield built
    built.close()


@pytest.fixture
def imaging_services(tmp_path: Path, database_url: str, tiny_lm_dir: Path) -> Iterator[Services]:
    """Services with small, fast imaging settings (16 x 16 images, a small CNN) and the tiny Llama."""
    from tests.imaging.cases import imaging_services_for

    built = imaging_services_for(tmp_path / "data", database_url, tiny_lm_dir)
    yield built
    built.close()


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised one-layer ViT with its image processor: the mechanics, not the vision."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
