"""Settings: config/default.toml, then the TOML file named in KB_CONFIG, then KB_* environment.

Nothing is built at import time; callers construct `Settings()` (or `load_settings`) explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kbservice.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "default.toml"


def default_data_dir() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/kbservice, else ~/.local/share/kbservice."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kbservice"


class EmbedderSettings(BaseModel):
    model_path: Path | None = None  # None: the packaged all-MiniLM-L6-v2
    # onnx runs an export of the sentence-transformers model on ONNX Runtime, made once into `export_dir`
    # (None: the data directory's models/ folder); torch runs the model as it is. A base built by one backend
    # is refused by the other until `kbservice index rebuild --reembed`. The default is measured (README,
    # "Embedding backends"): fp32 ONNX makes the same vectors as torch, ingests as fast, embeds a query 2.5x
    # as fast, and a process that only searches never imports torch (seconds off every command's start).
    backend: Literal["torch", "onnx"] = "onnx"
    onnx_precision: Literal["fp32", "int8"] = "fp32"
    export_dir: Path | None = None
    batch_size: int = Field(16, ge=1)
    # auto: CUDA when present (onnx asks ONNX Runtime, torch asks torch), else the CPU; or name one ("cuda:1")
    device: str = "auto"


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(256, ge=16)
    overlap_tokens: int = Field(32, ge=0)


class IngestSettings(BaseModel):
    max_file_mb: float = Field(20, gt=0)
    max_case_field_chars: int = Field(20_000, ge=100)  # per free-text field of a case or a request


class RecommendSettings(BaseModel):
    guideline_passages: int = Field(3, ge=0)  # in the prompt
    similar_cases: int = Field(5, ge=0)  # in the prompt
    evidence_depth: int = Field(20, ge=1)  # cases each ranker contributes to the similar-case evidence
    passage_chars: int = Field(600, ge=100)  # a treatment source is cut to this in its prompt
    prompt_guideline_chars: int = Field(160, ge=0)  # a guideline passage in the diagnosis prompt (latency)
    prompt_case_chars: int = Field(0, ge=0)  # a similar case's findings in the diagnosis prompt (0: label only)
    abstain_below: float = Field(0.5, ge=0, le=1)  # abstain when the top probability is lower
    treatment_sources: int = Field(3, ge=0)  # treatment sentences, one per source
    treatment_max_new_tokens: int = Field(48, ge=8)
    calibration_cases: int = Field(300, ge=10)  # held-out cases sampled to fit the fusion weights
    # Evidence-group selection for the fusion (recommend/group_selection.py): a group enters only if it lowers
    # the out-of-fold log-loss per case by this much (and by a standard error). None, the default: every
    # group enters. Measured: on DDXPlus 0.005 lifted accuracy 0.987 -> 0.995 (above TF-IDF + LR), but on
    # symptom2disease it kept only similar cases and fell 0.992 -> 0.972, so it stays off until it does not.
    fusion_group_margin: float | None = Field(None, ge=0)
    # Modality choice, for held-out cases with both text and image evidence: the holder holds unless another
    # option (image alone, then both or text) lowers the out-of-fold log-loss per case by this much (and by a
    # standard error). None: both always enter. The holder: "lower", whichever of text alone and text and
    # image has the lower loss; "text" (the earlier rule), or "text and image", always.
    fusion_modality_margin: float | None = Field(0.0, ge=0)
    fusion_modality_holder: Literal["lower", "text", "text and image"] = "lower"


class IndexSettings(BaseModel):
    kind: Literal["auto", "flat", "hnsw", "pq"] = "auto"
    exact_below: int = Field(200_000, ge=0)
    approximate_kind: Literal["hnsw", "pq"] = "pq"  # what `auto` switches to at exact_below
    pq_k_factor: int = Field(64, ge=1)  # pq: candidates re-ranked = k * pq_k_factor
    # pq: the re-ranking vectors' precision. float16 halves their memory (7.7 GB instead of 15.4 GB at 10M
    # 384-d vectors) with the same recall@10 (0.996 at 1M, k_factor 64); float32 re-ranks exactly.
    pq_rerank_dtype: Literal["float16", "float32"] = "float16"
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(64, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)
    # Exact searches from a GPU copy of the index: auto when FAISS has GPU support (the `gpu` extra) and
    # sees a GPU, else the CPU; or "cpu", "cuda", "cuda:N". Graph and PQ kinds stay on the CPU.
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # checked when the settings load
    # Lexical search from an in-memory BM25 replica (ranked as SQLite FTS5's bm25()), snapshotted with the
    # vector index; false: every lexical search is an SQL full-text query.
    lexical_replica: bool = True
    # After an ingest the snapshot gains a delta file (only what was added) while the deltas hold at most
    # compact_share of the base's vectors and number fewer than max_deltas; past either, the whole index is
    # rewritten as a new base (`kbservice index compact` does that on demand). 0: always rewrite.
    compact_share: float = Field(0.25, ge=0)
    max_deltas: int = Field(32, ge=1)


class LLMSettings(BaseModel):
    model_path: Path | None = None  # None: the packaged SmolLM2-135M-Instruct, converted once into data_dir/models
    device: str = "auto"  # auto: CUDA (bfloat16) when torch sees a GPU, else the CPU (float32)


class RetrievalSettings(BaseModel):
    default_k: int = Field(10, ge=1)
    rrf_k: int = Field(60, ge=1)
    candidates: int = Field(100, ge=1)


class LearnSettings(BaseModel):
    """The update cycle (what to train on, how) and its promotion gate."""

    min_new_cases: int = Field(20, ge=1)  # fewer new labelled cases than this: the cycle is skipped
    heldout_fraction: float = Field(0.2, gt=0, lt=1)  # of the new cases, kept out of training for the gate
    replay_cases: int = Field(64, ge=0)  # older cases mixed into training so earlier knowledge is kept
    seed: int = 0
    # LoRA and its optimiser.
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]
    learning_rate: float = Field(5e-4, gt=0)
    epochs: int = Field(1, ge=1)
    pack_tokens: int = Field(1024, ge=64)  # training examples are packed into sequences of at most this
    # The gate: the candidate must not be worse than the champion by more than these margins.
    f1_margin: float = Field(0.02, ge=0)  # macro-F1 overall
    class_margin: float = Field(0.15, ge=0)  # recall of any class the champion handled ...
    class_min_support: int = Field(3, ge=1)  # ... among classes with at least this many evaluation cases ...
    class_min_cases_lost: int = Field(2, ge=1)  # ... and by at least this many of its cases
    ece_margin: float = Field(0.03, ge=0)  # expected calibration error
    # Poisoning guard: a labeller whose new labels agree with the leave-one-out case evidence less often than
    # trusted labels do (the frozen set and replayed older cases), by more than the margin and improbably so
    # at the trusted rate (binomial tail < alpha), blocks the candidate.
    label_agreement_margin: float = Field(0.05, ge=0, le=1)
    label_agreement_alpha: float = Field(0.001, gt=0, lt=1)
    label_agreement_min_cases: int = Field(5, ge=1)
    # The scheduler.
    schedule: Literal["interval", "cron"] = "interval"
    interval_minutes: float = Field(60, gt=0)
    cron: str = "0 2 * * *"  # minute hour day month day-of-week, used when schedule = "cron"
    lease_seconds: float = Field(600, gt=1)  # a cycle's lease; renewed while it runs


class ApiSettings(BaseModel):
    """The HTTP service (`kbservice serve`)."""

    async_ingest_bytes: int = Field(262_144, ge=0)  # uploads larger than this are ingested as a background job
    max_upload_mb: float = Field(50, gt=0)  # per request
    job_threads: int = Field(2, ge=1)  # background jobs run on this many threads per worker
    watch_champion_s: float = Field(2.0, gt=0)  # how often a worker looks for a new champion adapter
    # An Idempotency-Key claim whose request never finished (its process died) may be retried after this
    # long, or at once when its process is certainly gone (same host).
    idempotency_stale_s: float = Field(600.0, gt=0)
    # Mark the web page's session cookie Secure even when the request arrived as plain HTTP (set it behind a
    # TLS-terminating proxy that does not forward the scheme); over HTTPS it is Secure anyway.
    secure_cookie: bool = False
    # SIGTERM: requests and streams in flight get this long to finish, then background jobs get as long again.
    shutdown_grace_s: float = Field(30.0, ge=0)


class ImagingSettings(BaseModel):
    """Medical images in cases: how they are read, encoded, searched and fused into the model."""

    size: int = Field(64, ge=8, le=512)  # every image becomes a size x size single-channel array
    max_file_mb: float = Field(64, gt=0)  # larger image files are refused
    max_pixels: int = Field(64_000_000, ge=1)  # rows x columns x frames above this are refused as absurd
    dicom_frame: Literal["middle"] | int = "middle"  # which frame of a multi-frame DICOM
    # CT: this window (Hounsfield units) unless the file names its own; None: the file's, else min-max.
    ct_window_center: float | None = None
    ct_window_width: float | None = None
    nifti_projection: Literal["slice", "mip"] = "slice"  # a volume becomes one slice or a max-intensity projection
    nifti_axis: int = Field(2, ge=0, le=2)
    nifti_slice: Literal["middle"] | int = "middle"
    # The encoder: "cnn" (trained here by the update cycle) or "huggingface" (a local vision model directory).
    encoder: Literal["cnn", "huggingface"] = "cnn"
    hf_model_path: Path | None = None
    cnn_width: int = Field(16, ge=4)  # channels of the first block (doubling per block)
    cnn_embedding_dim: int = Field(128, ge=8)
    cnn_epochs: int = Field(30, ge=1)
    cnn_batch_size: int = Field(64, ge=1)
    cnn_learning_rate: float = Field(2e-3, gt=0)
    cnn_max_seconds: float = Field(480, gt=0)  # training stops early (best epoch kept) past this
    # Self-supervised pre-training (SimCLR, imaging/pretraining.py) on every stored image outside the gate's
    # cases, labelled or not, before fine-tuning on the labelled ones; 0 epochs: train from scratch.
    cnn_pretrain_epochs: int = Field(0, ge=0)
    cnn_pretrain_batch_size: int = Field(128, ge=2)
    cnn_pretrain_temperature: float = Field(0.2, gt=0)
    cnn_pretrain_max_seconds: float = Field(300, gt=0)
    min_new_image_cases: int = Field(20, ge=1)  # fewer new labelled image cases: no new encoder is trained
    encoder_f1_margin: float = Field(0.02, ge=0)  # the gate: image-case macro-F1 may fall by at most this
    encoder_accuracy_margin: float = Field(0.02, ge=0)  # ... and accuracy by at most this
    # Fusion into the language model and the similar-image evidence.
    soft_tokens: int = Field(4, ge=1, le=64)
    projector_learning_rate: float = Field(1e-3, gt=0)  # the projector trains with the LoRA adapter
    similar_images: int = Field(10, ge=1)  # image neighbours each request draws evidence from
    # The encoder's class head as evidence beside the neighbours' votes (recommend/evidence.IMAGE_HEAD_FEATURES).
    # Off by default: on COVID-19 X-rays (vitals setting, 5 splits, SimCLR encoder) it lowered image-alone
    # accuracy by 0.054 and macro-F1 by 0.009; the votes of the nearest labelled films were the better signal.
    head_evidence: bool = False
    describe_max_new_tokens: int = Field(64, ge=8)


class PacsSettings(BaseModel):
    """A PACS spoken to over DICOMweb (QIDO-RS to find studies, WADO-RS to fetch their instances)."""

    url: str | None = None  # the DICOMweb root, e.g. http://pacs:8042/dicom-web; unset: no PACS
    username: str | None = None  # HTTP basic auth (with password) ...
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None  # ... or a bearer token
    timeout_s: float = Field(30.0, gt=0)  # per HTTP request (connect and each read)
    retries: int = Field(3, ge=0)  # on 5xx answers, timeouts and refused connections, with backoff
    backoff_s: float = Field(0.5, ge=0)  # the first wait; doubled per retry
    max_instances: int = Field(64, ge=1)  # a study or series with more instances is refused
    max_study_mb: float = Field(256, gt=0)  # the bytes fetched for one study or series, counted while reading


class DeidSettings(BaseModel):
    # Seals the de-identification key kept in the database: 32 bytes as 64 hex digits or base64. Give every
    # replica the same one (KB_DEID__KEY_ENCRYPTION_KEY); unset, a file in the data directory is made once,
    # which suits one machine and makes a second replica on the same database refuse to start.
    key_encryption_key: SecretStr | None = None


class Settings(BaseSettings):
    """Every tunable of the service. Precedence: arguments > KB_* env > KB_CONFIG file > default.toml."""

    model_config = SettingsConfigDict(env_prefix="KB_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # None: sqlite file kb.sqlite3 in data_dir
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    index: IndexSettings = IndexSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    recommend: RecommendSettings = RecommendSettings()
    learn: LearnSettings = LearnSettings()
    api: ApiSettings = ApiSettings()
    imaging: ImagingSettings = ImagingSettings()
    deid: DeidSettings = DeidSettings()
    pacs: PacsSettings = PacsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_files = [p for p in (DEFAULT_CONFIG_FILE, _user_config_file()) if p is not None and p.exists()]
        return (
            init_settings,
            env_settings,
            *(TomlConfigSettingsSource(settings_cls, toml_file=p) for p in reversed(toml_files)),
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'kb.sqlite3'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def encoders_dir(self) -> Path:
        return self.data_dir / "encoders"


def _user_config_file() -> Path | None:
    named = os.environ.get("KB_CONFIG")
    if not named:
        return None
    path = Path(named)
    if not path.exists():
        raise ConfigError(f"KB_CONFIG names {path}, which does not exist")
    return path


def load_settings(*, data_dir: Path | None = None) -> Settings:
    """Settings from files and environment, with `data_dir` (e.g. from --data-dir) taking precedence."""
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
