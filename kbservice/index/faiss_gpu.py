"""FAISS on a GPU (the `gpu` extra installs faiss-gpu in place of faiss-cpu): a GPU copy of an exact index
to search one query at a time, while the CPU index stays the one that is written, snapshotted and verified.

Only the exact (flat) kind moves: FAISS's GPU indexes have no HNSW or 4-bit fast-scan counterpart, and they
take no ID selector, so the caller over-fetches and filters exclusions itself.
"""

from __future__ import annotations

import functools

import faiss

GPU_MAX_K = 2048  # FAISS's GPU k-selection handles at most this many results per query


def gpu_available() -> bool:
    """FAISS was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def gpu_device(device: str) -> int | None:
    """The GPU number to search on for a configured `index.device` ("auto", "cpu", "cuda", "cuda:N"), or
    None for the CPU. "auto" takes GPU 0 when FAISS can use one; naming CUDA without a usable GPU is refused
    rather than quietly served from the CPU."""
    if device == "cpu":
        return None
    if device == "auto":
        return 0 if gpu_available() else None
    if device == "cuda" or device.startswith("cuda:"):
        if not gpu_available():
            raise ValueError(f"index.device = {device!r}, but FAISS has no GPU support or sees no GPU")
        return int(device.partition(":")[2] or 0)
    raise ValueError(f"index.device must be auto, cpu, cuda or cuda:N, not {device!r}")


@functools.cache
def _resources(device: int):  # type: ignore[no-untyped-def]
    """One set of GPU resources (streams, scratch memory) per GPU per process."""
    return faiss.StandardGpuResources()


def gpu_copy(flat: faiss.Index, device: int) -> faiss.Index:
    """A copy of the exact index `flat` (vectors by position, no ids) on GPU `device`."""
    return faiss.index_cpu_to_gpu(_resources(device), device, flat)
