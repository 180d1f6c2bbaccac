"""Embedder and VectorIndex protocols, their sentence-transformers and FAISS implementations, and the
index replica that follows the SQL outbox."""
