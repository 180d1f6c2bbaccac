"""Parsing, chunking and the ingest_* functions that turn files into knowledge versions."""
