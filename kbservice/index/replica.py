"""IndexReplica: this process's vector index and lexical (BM25) index, a projection of SQL that follows the outbox.

Every process (each with its own data directory) holds one replica. It loads its snapshot, applies the
outbox entries the snapshot lacks, checks its size against SQL, and serves only versions it has fully
applied. SQL stays the source of truth: a replica can always be rebuilt from the stored embeddings and
chunk texts. The lexical index ranks exactly as the SQL full-text index's bm25() (SQLite FTS5) does;
searches it cannot answer that way fall back to SQL (see `lexical_search`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kbservice.config import IndexSettings
from kbservice.db.lexical import query_terms
from kbservice.db.store import KnowledgeStore
from kbservice.errors import IndexMismatchError
from kbservice.index.bm25_index import Bm25Index
from kbservice.index.delta_files import Delta, concatenate_tokens
from kbservice.index.faiss_index import PQ_MIN_VECTORS, build_index
from kbservice.index.fts_tokens import FtsTokenizer, TokenizedRows
from kbservice.index.protocols import VectorIndex
from kbservice.index.snapshot import Manifest, append_delta, load_snapshot, remove_leftovers, write_snapshot
from kbservice.types import IndexHealth

_REPORTED_IDS = 20  # verify lists at most this many missing/orphan ids

log = logging.getLogger(__name__)


class IndexReplica:
    def __init__(
        self,
        *,
        store: KnowledgeStore,
        embedder_id: str,
        dimension: int,
        settings: IndexSettings,
        directory: Path,
    ) -> None:
        self.store = store
        self.embedder_id = embedder_id
        self.dimension = dimension
        self.settings = settings
        self.directory = directory
        self.applied_seq = 0
        self.manifest: Manifest | None = None
        self._index: VectorIndex | None = None
        self._lexical: Bm25Index | None = None  # None: lexical_replica is off (SQL answers lexical searches)
        self._tokenizer: FtsTokenizer | None = None
        self._lock = threading.RLock()
        self._excluded_cache: dict[tuple[int, str | None, int], np.ndarray] = {}

    # ----- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Loads the snapshot, replays the outbox it lacks, and fails loudly if it disagrees with SQL."""
        with self._lock:
            self._index, self.manifest, self._lexical = self._load_from_disk()
            self.applied_seq = self.manifest.applied_seq if self.manifest else 0
            sql_seq = self.store.max_outbox_seq()
            if self.applied_seq > sql_seq:
                raise IndexMismatchError(
                    f"the index snapshot has applied outbox entry {self.applied_seq} but the database has only "
                    f"{sql_seq} (a snapshot from another database?); run `kbservice index rebuild`"
                )
            if self.settings.lexical_replica and self._lexical is None:
                # A snapshot written with lexical_replica off, or by an older kbservice: build the lexical
                # index from SQL and write a whole new base (a delta onto a base without one would leave
                # every later start-up rebuilding it).
                self._lexical = self._build_lexical_from_sql(upto_seq=self.applied_seq)
                self.catch_up(snapshot=False)
                if self.applied_seq:
                    self._write_snapshot()
            else:
                self.catch_up()
            expected = self.store.outbox_count(upto_seq=self.applied_seq)
            if self.index.size != expected:
                raise IndexMismatchError(
                    f"the index holds {self.index.size} vectors but SQL has {expected} chunks up to outbox "
                    f"entry {self.applied_seq}; run `kbservice index verify`, then `kbservice index rebuild`"
                )

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            raise RuntimeError("IndexReplica.open() was not called")
        return self._index

    @property
    def lexical(self) -> Bm25Index | None:
        """The in-memory BM25 index; None when lexical_replica is off."""
        return self._lexical

    @property
    def tokenizer(self) -> FtsTokenizer:
        if self._tokenizer is None:
            self._tokenizer = FtsTokenizer()
        return self._tokenizer

    def _load_from_disk(self) -> tuple[VectorIndex, Manifest | None, Bm25Index | None]:
        """The checked snapshot, or empty indexes when none was written; IndexMismatchError otherwise.
        The lexical index is None when lexical_replica is off or the snapshot has none."""
        self._check_stored_embedder()
        removed = remove_leftovers(self.directory)  # a snapshot writer killed mid-write leaves temp files
        if removed:
            log.warning("removed %d file(s) left by an interrupted index snapshot: %s", len(removed), removed)
        lexical = self.settings.lexical_replica
        loaded = load_snapshot(
            self.directory,
            embedder_id=self.embedder_id,
            dimension=self.dimension,
            settings=self.settings,
            lexical=lexical,
        )
        if loaded is None:
            return self._empty(), None, Bm25Index() if lexical else None
        return loaded

    def _check_stored_embedder(self) -> None:
        stored = self.store.stored_embedder_id()
        if stored is not None and stored != self.embedder_id:
            raise IndexMismatchError.other_embedder(stored, self.embedder_id)

    def _kind_for(self, size: int) -> str:
        kind = self.settings.kind
        if kind == "auto":
            kind = "flat" if size < self.settings.exact_below else self.settings.approximate_kind
        return "flat" if kind == "pq" and size < PQ_MIN_VECTORS else kind

    def _empty(self) -> VectorIndex:
        return build_index(dimension=self.dimension, kind=self._kind_for(0), settings=self.settings)

    # ----- following the outbox ---------------------------------------------------------------------

    def catch_up(self, *, snapshot: bool = True, progress: Callable[[int], None] | None = None) -> int:
        """Applies outbox entries after the applied position, in order; snapshots if any were applied (as a
        delta while the deltas stay small, else as a new base)."""
        with self._lock:
            applied = 0
            start_seq = self.applied_seq
            added: list[tuple[np.ndarray, np.ndarray, TokenizedRows | None]] | None = []
            for last_seq, ids, vectors in self.store.outbox_after(self.applied_seq):
                tokens = (
                    self.tokenizer.tokenize_rows(self.store.chunk_fields(ids)) if self._lexical is not None else None
                )
                self.index.add(ids, vectors)
                if self._lexical is not None and tokens is not None:
                    self._lexical.add(ids, tokens)
                self.applied_seq = last_seq
                applied += len(ids)
                if added is not None and self._delta_fits(applied):  # kept only while a delta could take it
                    added.append((ids, vectors, tokens))
                else:
                    added = None
                if progress:
                    progress(len(ids))
            if applied:
                rebuilt = self._kind_for(self.index.size) != self.index.kind
                if rebuilt:
                    self._index = self._build_from_sql(upto_seq=self.applied_seq)
                self._excluded_cache.clear()
                # A delta must start where the snapshot on disk ends (a catch-up without a snapshot may
                # have moved this replica past it).
                on_disk = self.manifest.applied_seq if self.manifest is not None else None
                if snapshot and not rebuilt and added and on_disk == start_seq:
                    self._append_delta(added)
                elif snapshot:
                    self._write_snapshot()
            return applied

    def _delta_fits(self, vectors: int) -> bool:
        """May `vectors` more go into a delta, or is it time for a new base?"""
        manifest = self.manifest
        if manifest is None or len(manifest.deltas) + 1 > self.settings.max_deltas:
            return False
        base = manifest.vectors - manifest.delta_vectors
        return manifest.delta_vectors + vectors <= self.settings.compact_share * base

    def _append_delta(self, added: list[tuple[np.ndarray, np.ndarray, TokenizedRows | None]]) -> None:
        assert self.manifest is not None
        tokens = [part for _, _, part in added]
        delta = Delta(
            ids=np.concatenate([ids for ids, _, _ in added]),
            vectors=np.concatenate([vectors for _, vectors, _ in added]),
            tokens=concatenate_tokens([t for t in tokens if t is not None]) if self._lexical is not None else None,
        )
        written = append_delta(self.directory, previous=self.manifest, delta=delta, applied_seq=self.applied_seq)
        if written is None:  # another process sharing this directory replaced the snapshot
            self._write_snapshot()
        else:
            self.manifest = written

    def compact(self) -> Manifest:
        """Folds the snapshot's deltas into a new base (rewrites the whole index); returns its manifest."""
        with self._lock:
            self.catch_up(snapshot=False)
            self._write_snapshot()
            assert self.manifest is not None
            return self.manifest

    def _write_snapshot(self) -> None:
        self.manifest = write_snapshot(
            self.index,
            self.directory,
            applied_seq=self.applied_seq,
            embedder_id=self.embedder_id,
            lexical=self._lexical,
        )

    def _build_from_sql(self, *, upto_seq: int, progress: Callable[[int], None] | None = None) -> VectorIndex:
        all_ids, all_vectors = [], []
        for _, ids, vectors in self.store.outbox_after(0, upto_seq=upto_seq):
            all_ids.append(ids)
            all_vectors.append(vectors)
            if progress:
                progress(len(ids))
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(all_vectors) if all_vectors else np.zeros((0, self.dimension), dtype=np.float32)
        return build_index(
            dimension=self.dimension, kind=self._kind_for(len(ids)), settings=self.settings, ids=ids, vectors=vectors
        )

    def _build_lexical_from_sql(self, *, upto_seq: int) -> Bm25Index:
        """A BM25 index over the chunk texts of outbox entries up to `upto_seq` (the same rows as the vectors)."""
        lexical = Bm25Index()
        for _, ids, _ in self.store.outbox_after(0, upto_seq=upto_seq):
            lexical.add(ids, self.tokenizer.tokenize_rows(self.store.chunk_fields(ids)))
        return lexical

    def rebuild(self, *, progress: Callable[[int], None] | None = None) -> Manifest:
        """Fresh indexes from the embeddings and texts stored in SQL, snapshotted; replaces whatever was on disk."""
        with self._lock:
            self._check_stored_embedder()
            target = self.store.max_outbox_seq()
            self._index = self._build_from_sql(upto_seq=target, progress=progress)
            self._lexical = self._build_lexical_from_sql(upto_seq=target) if self.settings.lexical_replica else None
            self.applied_seq = target
            self._excluded_cache.clear()
            self._write_snapshot()
            assert self.manifest is not None
            return self.manifest

    # ----- serving --------------------------------------------------------------------------------

    def serving_version(self) -> int | None:
        """The newest knowledge version whose every chunk this replica has applied."""
        return self.store.version_for_outbox_seq(self.applied_seq)

    def _excluded(self, version: int, kind: str | None, also_exclude: np.ndarray | None) -> np.ndarray:
        """Chunk ids a search at `version` (of `kind`) must not return; cached per (version, kind, position)."""
        key = (version, kind, self.applied_seq)
        excluded = self._excluded_cache.get(key)
        if excluded is None:
            excluded = self.store.invalid_chunk_ids(version, kind=kind)
            # A request asks for guidelines and for cases: keep both, drop entries of older seqs.
            self._excluded_cache = {old: ids for old, ids in self._excluded_cache.items() if old[2] == self.applied_seq}
            self._excluded_cache[key] = excluded
        if also_exclude is not None and len(also_exclude):
            excluded = np.union1d(excluded, np.asarray(also_exclude, dtype=np.int64))
        return excluded

    def search(
        self,
        query: np.ndarray,
        *,
        k: int,
        version: int,
        kind: str | None = None,
        also_exclude: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """Best-first (chunk id, cosine) among chunks valid at `version` (of documents of `kind`, if given),
        leaving out `also_exclude` (a held-out case must not find itself)."""
        with self._lock:
            return self.index.search(query, k=k, exclude_ids=self._excluded(version, kind, also_exclude))

    def lexical_search(
        self,
        query: str,
        *,
        k: int,
        version: int,
        kind: str | None = None,
        also_exclude: np.ndarray | None = None,
    ) -> list[tuple[int, float]] | None:
        """Best-first (chunk id, bm25 score) for the SQL full-text query of `query` (an OR of its content
        words), among chunks valid at `version` (of `kind`); None when the SQL index must answer instead:
        the replica is off, or FTS5's tokenizer makes other than one token of a query word (query_terms and
        unicode61 split text alike for ordinary words; a phrase of several tokens needs positions, which a
        term index does not keep)."""
        if self._lexical is None:
            return None
        phrases = []
        for word in query_terms(query):
            tokens = self.tokenizer.stems(word)
            if len(tokens) != 1:
                return None
            phrases.append(tokens[0])
        with self._lock:
            return self._lexical.search(phrases, k=k, exclude_ids=self._excluded(version, kind, also_exclude))

    def verify(self) -> IndexHealth:
        """Compares the snapshot (plus pending outbox, applied in memory only) with SQL; writes nothing."""
        problems: list[str] = []
        outbox_seq = self.store.max_outbox_seq()  # one cut-off, so a concurrent ingest is not an orphan
        sql_ids = self.store.outbox_chunk_ids(upto_seq=outbox_seq)
        index_ids = np.zeros(0, dtype=np.int64)
        kind = "none"
        applied_seq = 0
        try:
            index, manifest, lexical = self._load_from_disk()
            if manifest is None and len(sql_ids):
                problems.append("no index snapshot on disk")
            applied_seq = manifest.applied_seq if manifest else 0
            pending = []
            for last_seq, ids, vectors in self.store.outbox_after(applied_seq, upto_seq=outbox_seq):
                index.add(ids, vectors)
                pending.append(ids)
                applied_seq = last_seq
            index_ids, kind = index.ids(), index.kind
            if lexical is not None and (manifest is None or manifest.lexical_file):
                lexical_ids = np.concatenate([lexical.ids(), *pending])
                differing = len(np.setxor1d(lexical_ids, index_ids))
                if differing or len(lexical_ids) != len(index_ids):
                    problems.append(
                        f"the lexical index holds {len(lexical_ids)} chunks and the vector index {len(index_ids)}; "
                        f"{differing} chunk id(s) are in only one of them"
                    )
        except IndexMismatchError as exc:
            problems.append(str(exc))
        missing = np.setdiff1d(sql_ids, index_ids)
        orphans = np.setdiff1d(index_ids, sql_ids)
        duplicates = len(index_ids) - len(np.unique(index_ids))
        if len(missing):
            problems.append(f"{len(missing)} chunk(s) in SQL are missing from the index")
        if len(orphans):
            problems.append(f"{len(orphans)} vector(s) in the index have no chunk in SQL")
        if duplicates:
            problems.append(f"{duplicates} chunk id(s) appear more than once in the index")
        return IndexHealth(
            ok=not problems,
            sql_chunks=len(sql_ids),
            index_vectors=len(index_ids),
            missing=[int(i) for i in missing[:_REPORTED_IDS]],
            orphans=[int(i) for i in orphans[:_REPORTED_IDS]],
            applied_seq=applied_seq,
            outbox_seq=outbox_seq,
            embedder_id=self.embedder_id,
            index_kind=kind,
            problems=problems,
        )
