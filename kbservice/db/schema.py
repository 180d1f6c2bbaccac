"""The SQL schema (SQLAlchemy Core). Changes here need an Alembic migration in migrations/versions."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An append-only log: a row is never updated after its transaction commits.
knowledge_versions = Table(
    "knowledge_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("parent", Integer, ForeignKey("knowledge_versions.version"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("author", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("documents", Integer, nullable=False),
    Column("chunks", Integer, nullable=False),
    # The highest outbox seq written by this version: a replica may serve the version once applied.
    Column("last_outbox_seq", Integer, nullable=False),
)

documents = Table(
    "documents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_key", String(1024), nullable=False),
    Column("source", String(300), nullable=False),
    Column("title", Text, nullable=False),
    Column("format", String(16), nullable=False),
    # "guideline" or "case": retrieval asks for passages and similar cases separately.
    Column("kind", String(16), nullable=False, server_default="guideline"),
    Column("publisher", String(300)),
    Column("effective_date", String(40)),
    Column("url", Text),
    Column("meta", JSON, nullable=False),
    Column("text", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("version_added", Integer, ForeignKey("knowledge_versions.version"), nullable=False),
    Column("version_removed", Integer, ForeignKey("knowledge_versions.version"), nullable=True),
    Column("removed_reason", Text),
    Index("ix_documents_source_key", "source_key"),
    # At most one live document per identity; supersession closes the old one first.
    Index(
        "uq_documents_live_source_key",
        "source_key",
        unique=True,
        sqlite_where=text("version_removed IS NULL"),
        postgresql_where=text("version_removed IS NULL"),
    ),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", Integer, primary_key=True),  # also the FAISS vector id
    Column("document_id", Integer, ForeignKey("documents.id"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("heading_path", JSON, nullable=False),
    Column("context", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("char_start", Integer, nullable=False),
    Column("char_end", Integer, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    # float32 little-endian; kept in SQL so replicas and rebuilds never need to re-embed.
    Column("embedding", LargeBinary, nullable=False),
    Column("version_added", Integer, ForeignKey("knowledge_versions.version"), nullable=False),
    Column("version_removed", Integer, ForeignKey("knowledge_versions.version"), nullable=True),
    Index("ix_chunks_document_id", "document_id"),
    Index("ix_chunks_version_added", "version_added"),
    Index("ix_chunks_version_removed", "version_removed"),
)

# Every chunk gets exactly one outbox entry, written in the chunk's own transaction.
index_outbox = Table(
    "index_outbox",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("chunk_id", Integer, ForeignKey("chunks.id"), nullable=False, unique=True),
    Column("version", Integer, ForeignKey("knowledge_versions.version"), nullable=False),
)

kb_meta = Table(
    "kb_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# Hash-chained and append-only: each row's hash covers its content and the previous row's hash.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(40), nullable=False),  # ISO-8601 UTC, exactly as hashed
    Column("kind", String(60), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON, exactly as hashed
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_kind", "kind"),
)

# The structured, de-identified fields of a case; its text is also a document (kind "case") with one chunk,
# so a case is versioned, embedded and retracted exactly like a guideline.
cases = Table(
    "cases",
    metadata,
    Column("case_id", Integer, primary_key=True),
    Column("document_id", Integer, ForeignKey("documents.id"), nullable=False, unique=True),
    Column("external_id", String(200), nullable=False),
    Column("findings", Text, nullable=False),
    Column("history", Text),
    Column("age", String(8)),  # "90+" for ages over 89 (HIPAA Safe Harbor generalisation)
    Column("sex", String(1)),
    Column("diagnoses", JSON, nullable=False),  # list of labels; empty for an unlabelled case
    Column("treatment", Text),
    Column("images", JSON, nullable=False),
    Column("labeled_by", String(200)),
    Column("version_added", Integer, ForeignKey("knowledge_versions.version"), nullable=False),
    Index("ix_cases_external_id", "external_id"),
)

# Fitted fusion weights (temperature scaling generalised to several evidence sources) for one model,
# adapter and prompt version. Immutable: a refit writes a new row.
calibrations = Table(
    "calibrations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("base_model_sha256", String(64), nullable=False),
    Column("adapter_version", String(40)),
    Column("prompt_version", String(40), nullable=False),
    Column("mode", String(16), nullable=False),  # "rag" or "no-rag"
    Column("knowledge_version", Integer, nullable=False),
    Column("weights", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("case_ids", JSON, nullable=False),
    # The case classifier whose scores the weights were fitted on (None: fitted without one). A request
    # answered with this calibration scores its candidates with exactly that classifier.
    Column("classifier_version", String(40)),
    Index("ix_calibrations_lookup", "base_model_sha256", "prompt_version", "mode"),
)

# Every recommendation as answered: request (de-identified), response and provenance, for show and replay.
recommendations = Table(
    "recommendations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", String(40), nullable=False),
    Column("request", JSON, nullable=False),
    Column("response", JSON, nullable=False),
    Column("response_hash", String(64), nullable=False),
    Column("audit_seq", Integer, nullable=False),
)

# LoRA adapter versions. A row is written when training starts ("training") and finished exactly once
# ("promoted", "rejected" or "failed"); it never changes after that. Promotion and rollback move aliases.
adapters = Table(
    "adapters",
    metadata,
    Column("version", String(40), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parent", String(40)),  # the adapter it was trained from; NULL: the bare base model
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("base_model", String(200), nullable=False),
    Column("base_model_sha256", String(64), nullable=False),
    Column("knowledge_version", Integer, nullable=False),  # the knowledge it was trained and judged on
    Column("data_watermark", Integer, nullable=False),  # cases added up to this version are "seen"
    Column("train_case_ids", JSON, nullable=False),
    Column("heldout_case_ids", JSON, nullable=False),
    Column("replay_case_ids", JSON, nullable=False),
    Column("frozen_case_ids", JSON, nullable=False),
    Column("hyperparameters", JSON, nullable=False),
    Column("metrics", JSON),
    Column("report", JSON),
    Column("artifact_sha256", String(64)),
    # The adapter's files as one tar (a LoRA adapter is a few MB), so every process sharing the database,
    # on any machine, can materialise and verify it without shared storage.
    Column("artifact", LargeBinary),
    Column("triggered_by", String(200), nullable=False),
    Column("error", Text),
    # The image encoder version its projector was trained on (NULL: no image tokens in this adapter).
    Column("encoder_version", String(40)),
)

# `champion` and `previous`: pointers to adapter versions (NULL: the bare base model).
adapter_aliases = Table(
    "adapter_aliases",
    metadata,
    Column("alias", String(20), primary_key=True),
    Column("version", String(40), ForeignKey("adapters.version")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per update cycle, skipped ones included.
update_runs = Table(
    "update_runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),  # running | promoted | rejected | skipped | failed
    Column("adapter_version", String(40)),
    Column("reason", Text),
    Column("knowledge_version", Integer),
    Column("triggered_by", String(200), nullable=False),
    Column("report", JSON),
)

# Named leases: at most one holder at a time across processes and machines sharing the database.
leases = Table(
    "leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),  # unix time; a lapsed lease may be taken over
    Column("acquired_at", Float, nullable=False),
)

# The frozen evaluation set: trusted labelled cases every candidate is judged on. It grows only by an
# explicit command and its cases are never trained on.
frozen_eval_cases = Table(
    "frozen_eval_cases",
    metadata,
    Column("case_id", Integer, ForeignKey("cases.case_id"), primary_key=True),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(200), nullable=False),
)

# API keys: only a sha256 of each key is stored (keys are 256-bit random, so a slow hash adds nothing);
# a revoked key keeps its row so the audit log's key names stay meaningful.
api_keys = Table(
    "api_keys",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

# Idempotency-Key records of POST routes: the first request's body hash and, once done, its response.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(300), primary_key=True),  # route + caller key name + the client's key
    Column("request_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # running | done
    Column("response_status", Integer),
    Column("response_body", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),  # when the current claim was taken
    Column("owner", String(200)),  # the process running the request (process_identity); None before 0010
)

# Background jobs of the API (large ingests, update cycles): any worker process can report on any job.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("created_by", String(100), nullable=False),
    Column("result", JSON),
    Column("error", JSON),
    Column("worker", String(200)),  # the process whose threads run the job (process_identity); None before 0010
)

# The images of cases, de-identified before this row is written. `pixels` is the normalised size x size
# uint8 array every encoder reads (so re-embedding never re-decodes files); the de-identified file itself
# lies under data_dir/images at `stored_path`.
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.case_id"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # of the stored, de-identified file
    Column("format", String(8), nullable=False),  # dicom | png | jpeg | nifti
    Column("modality", String(16)),
    Column("source_shape", JSON, nullable=False),
    Column("stored_path", String(300), nullable=False),
    Column("pixel_size", Integer, nullable=False),
    Column("pixels", LargeBinary, nullable=False),
    Column("header", JSON, nullable=False),  # DICOM: every element as stored; others: what was kept
    Column("deidentified", Boolean, nullable=False),
    Column("deid_method", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_images_case_id", "case_id"),
)

# Image encoder versions, like adapters: written when training starts, finished exactly once, then
# immutable; `champion`/`previous` aliases move on promotion and rollback.
image_encoders = Table(
    "image_encoders",
    metadata,
    Column("version", String(40), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # training | promoted | rejected | failed
    Column("kind", String(20), nullable=False),  # cnn | huggingface
    Column("parent", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("knowledge_version", Integer, nullable=False),
    Column("data_watermark", Integer, nullable=False),
    Column("labels", JSON, nullable=False),  # the classes its training head knows
    Column("train_case_ids", JSON, nullable=False),
    Column("heldout_case_ids", JSON, nullable=False),
    Column("hyperparameters", JSON, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("pixel_size", Integer, nullable=False),
    Column("metrics", JSON),
    Column("report", JSON),
    Column("artifact_sha256", String(64)),
    Column("artifact", LargeBinary),
    Column("triggered_by", String(200), nullable=False),
    Column("error", Text),
)

image_encoder_aliases = Table(
    "image_encoder_aliases",
    metadata,
    Column("alias", String(20), primary_key=True),
    Column("version", String(40)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Case classifier versions (learned evidence over case text), like adapters and encoders: written when
# training starts, finished exactly once, then immutable; `champion`/`previous` aliases move on promotion.
case_classifiers = Table(
    "case_classifiers",
    metadata,
    Column("version", String(40), primary_key=True),
    Column("run_id", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # training | promoted | rejected | failed
    Column("parent", String(40)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("knowledge_version", Integer, nullable=False),
    Column("data_watermark", Integer, nullable=False),
    Column("embedder", String(200), nullable=False),  # the embedder id its embedding features came from
    Column("labels", JSON, nullable=False),
    Column("train_case_ids", JSON, nullable=False),
    Column("heldout_case_ids", JSON, nullable=False),  # held-out + frozen: never trained on, judged on
    Column("hyperparameters", JSON, nullable=False),
    Column("metrics", JSON),
    Column("report", JSON),
    Column("artifact_sha256", String(64)),
    Column("artifact", LargeBinary),
    Column("triggered_by", String(200), nullable=False),
    Column("error", Text),
)

case_classifier_aliases = Table(
    "case_classifier_aliases",
    metadata,
    Column("alias", String(20), primary_key=True),
    Column("version", String(40)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Keys every replica must share (the de-identification key), each sealed with a key-encryption key that the
# database never sees: reading this table alone reveals nothing.
service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),  # nonce + AES-256-GCM ciphertext
    Column("kek_fingerprint", String(16), nullable=False),  # which key-encryption key sealed it (not secret)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),  # the process that stored it (process_identity)
)
