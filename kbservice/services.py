"""build_services: the one place that picks concrete classes for the protocols."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbservice.audit import AuditLog
from kbservice.classifier.registry import ClassifierRegistry
from kbservice.config import Settings
from kbservice.db import KnowledgeStore, make_engine, migrate
from kbservice.db.adapter_store import AdapterStore
from kbservice.db.audit_log import AuditLogStore
from kbservice.db.case_store import CaseStore
from kbservice.db.classifier_store import ClassifierStore
from kbservice.db.encoder_store import EncoderStore
from kbservice.db.image_store import ImageStore
from kbservice.db.recommendation_store import RecommendationStore
from kbservice.db.secret_store import SecretStore
from kbservice.db.service_store import ApiKeyStore, IdempotencyStore, JobStore
from kbservice.imaging.deid_key import deid_key
from kbservice.index.embedder import SentenceTransformerEmbedder, packaged_model_dir
from kbservice.index.onnx_embedder import OnnxEmbedder
from kbservice.index.onnx_export import ensure_onnx_export
from kbservice.index.protocols import Embedder
from kbservice.index.query_batching import BatchingEmbedder
from kbservice.index.replica import IndexReplica
from kbservice.learn.registry import AdapterRegistry
from kbservice.llm.protocols import Generator
from kbservice.recommend.pipeline import Recommender, ServingClassifier
from kbservice.retrieve import Retriever

if TYPE_CHECKING:  # types only: SQLAlchemy stays inside db/
    from sqlalchemy import Engine

    from kbservice.imaging.registry import EncoderRegistry
    from kbservice.imaging.similarity import ImageSimilarity
    from kbservice.llm.model_files import BaseModel


class Services:
    """Lazily built parts: listing versions never loads a model; searching loads the embedder once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded_adapters: set[str] = set()
        # Set when the service running these parts shuts down: update cycles stop at their next check.
        self.stopping = threading.Event()

    @cached_property
    def engine(self) -> Engine:
        engine = make_engine(self.settings.resolved_database_url)
        migrate.require_current_schema(engine)
        return engine

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(AuditLogStore(self.engine))

    @cached_property
    def store(self) -> KnowledgeStore:
        return KnowledgeStore(self.engine, audit=self.audit)

    @cached_property
    def embedder(self) -> Embedder:
        cfg = self.settings.embedder
        if cfg.backend == "onnx":
            export = ensure_onnx_export(
                cfg.model_path or packaged_model_dir(),
                cache_dir=cfg.export_dir or self.settings.models_dir,
                precision=cfg.onnx_precision,
            )
            return OnnxEmbedder(export, batch_size=cfg.batch_size, device=cfg.device)
        return SentenceTransformerEmbedder(
            cfg.model_path,
            batch_size=cfg.batch_size,
            device=cfg.device,
            shape_cache_dir=cfg.export_dir or self.settings.models_dir,
        )

    def replica_unopened(self) -> IndexReplica:
        """A replica that has not loaded its snapshot: for verify and rebuild, which must not fail on it."""
        return IndexReplica(
            store=self.store,
            embedder_id=self.embedder.embedder_id,
            dimension=self.embedder.dimension,
            settings=self.settings.index,
            directory=self.settings.index_dir,
        )

    @cached_property
    def replica(self) -> IndexReplica:
        replica = self.replica_unopened()
        replica.open()
        return replica

    @cached_property
    def retriever(self) -> Retriever:
        # Queries from concurrent requests are encoded in shared batches (ingest encodes its own batches).
        return Retriever(
            store=self.store,
            embedder=BatchingEmbedder(self.embedder),
            replica=self.replica,
            settings=self.settings.retrieval,
        )

    @cached_property
    def case_store(self) -> CaseStore:
        return CaseStore(self.engine)

    @cached_property
    def recommendations(self) -> RecommendationStore:
        return RecommendationStore(self.engine)

    @cached_property
    def key_store(self) -> ApiKeyStore:
        return ApiKeyStore(self.engine)

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return IdempotencyStore(self.engine, stale_after_s=self.settings.api.idempotency_stale_s)

    @cached_property
    def secret_store(self) -> SecretStore:
        return SecretStore(self.engine)

    def deid_key(self) -> bytes:
        """The de-identification key every replica shares (SecretKeyError when this replica's disagrees)."""
        return deid_key(self.secret_store, self.settings)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.engine)

    @cached_property
    def base_model(self) -> BaseModel:
        from kbservice.llm.model_files import resolve_base_model

        return resolve_base_model(model_path=self.settings.llm.model_path, cache_dir=self.settings.models_dir)

    @cached_property
    def generator(self) -> Generator:
        from kbservice.llm.transformers_generator import TransformersGenerator

        return TransformersGenerator(self.base_model, device=self.settings.llm.device)

    @cached_property
    def adapter_store(self) -> AdapterStore:
        return AdapterStore(self.engine)

    @cached_property
    def registry(self) -> AdapterRegistry:
        return AdapterRegistry(self.adapter_store, audit=self.audit, directory=self.settings.adapters_dir)

    def serving_adapter(self, requested: str | None) -> str | None:
        """The adapter a request runs on (the champion unless it names one), loaded and ready. Read per
        request, so a long-lived process picks up a new champion between requests without a restart."""
        version = self.registry.resolve(requested)
        if version is not None:
            self.load_adapter(version)
        return version

    def load_adapter(self, version: str) -> None:
        """Loads a stored adapter into the generator, its files checked against their recorded checksum
        once, when first loaded (replay and the gate use versions that are not served)."""
        if version not in self._loaded_adapters:
            self.generator.load_adapter(version, self.registry.verified_path(version))
            self._loaded_adapters.add(version)

    @cached_property
    def classifier_store(self) -> ClassifierStore:
        return ClassifierStore(self.engine)

    @cached_property
    def classifiers(self) -> ClassifierRegistry:
        return ClassifierRegistry(store=self.classifier_store, embedder_id=lambda: self.embedder.embedder_id)

    def serving_classifier(self, version: str | None) -> ServingClassifier | None:
        """The stored classifier `version` ready to score (None: none)."""
        return ServingClassifier(version=version, model=self.classifiers.load(version)) if version else None

    @cached_property
    def image_store(self) -> ImageStore:
        return ImageStore(self.engine)

    @cached_property
    def encoder_store(self) -> EncoderStore:
        return EncoderStore(self.engine)

    @cached_property
    def encoders(self) -> EncoderRegistry:
        from kbservice.imaging.registry import EncoderRegistry

        return EncoderRegistry(store=self.encoder_store, settings=self.settings.imaging, audit=self.audit)

    @cached_property
    def image_similarity(self) -> ImageSimilarity:
        from kbservice.imaging.similarity import ImageSimilarity

        return ImageSimilarity(registry=self.encoders, images=self.image_store, index_dir=self.settings.index_dir)

    @cached_property
    def recommender(self) -> Recommender:
        return Recommender(
            retriever=self.retriever,
            case_store=self.case_store,
            images=self.image_similarity,
            imaging=self.settings.imaging,
            generator=self.generator,
            settings=self.settings.recommend,
            max_chars=self.settings.ingest.max_case_field_chars,
        )

    def ingest_targets(self) -> dict[str, Any]:
        """The keyword arguments every ingest function takes: the store it writes, the embedder, the index
        replica it updates and the settings it follows."""
        return {"store": self.store, "embedder": self.embedder, "replica": self.replica, "settings": self.settings}

    def index_build(self) -> str:
        """Names the index build now serving (provenance)."""
        manifest = self.replica.manifest
        return manifest.build_id if manifest else f"seq{self.replica.applied_seq}-unsnapshotted"

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def initialise(settings: Settings) -> str:
    """Creates the data directory and migrates the database to head; idempotent. Returns the revision."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate.upgrade(engine)
        return migrate.current_revision(engine) or ""
    finally:
        engine.dispose()


def build_services(settings: Settings) -> Services:
    return Services(settings)


@contextmanager
def temporary_services(settings: Settings) -> Iterator[tuple[Services, Path]]:
    """Services on a fresh temporary data directory (SQLite) with `settings`' models, and that directory:
    where evaluations and benchmarks build their own knowledge bases. Everything is removed on exit."""
    from kbservice.llm.model_files import resolve_base_model

    # The converted model stays in the real data directory: convert once, not once per evaluation.
    base = resolve_base_model(model_path=settings.llm.model_path, cache_dir=settings.models_dir)
    llm = settings.llm.model_copy(update={"model_path": base.path})
    with tempfile.TemporaryDirectory(prefix="kbservice-eval-") as tmp:
        scratch = settings.model_copy(update={"data_dir": Path(tmp), "database_url": None, "llm": llm})
        initialise(scratch)
        services = build_services(scratch)
        try:
            yield services, Path(tmp)
        finally:
            services.close()
