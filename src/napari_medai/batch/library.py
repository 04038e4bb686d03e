"""`retrieve build` on Dask: cases are read and embedded on the workers, the library is assembled here."""

from __future__ import annotations

from typing import Optional

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, callbacks


def embed_chunk(entries, embedder_spec: Optional[str], volumes: str) -> dict:
    """One task: read and embed a chunk of cases on a worker (unreadable files become failures)."""
    from ..retrieval.embedder import get_embedder
    from ..retrieval.library import embed_entries

    embedder = get_embedder(embedder_spec)
    vectors, records, failures = embed_entries(entries, embedder, volumes)
    return {"vectors": vectors, "records": records, "failures": failures, "embedder_sha256": embedder.sha256}


def build_library(
    source,
    *,
    embedder: Optional[str] = None,
    scheduler: Optional[str] = None,
    workers: Optional[int] = None,
    volumes: str = "middle",
    index: str = "auto",
    chunk: int = 32,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
):
    """Build a :class:`CaseLibrary` with the embedding spread over a Dask cluster.

    Returns ``(library, failures)``; ``failures`` lists ``(path, reason)`` of cases that could not be read.
    Case ids follow the order of ``source``, as in a serial build.
    """
    from ..retrieval.library import CaseLibrary, entries_from_source
    from .runner import cluster_client, completed

    progress, should_stop = callbacks(progress, should_stop)
    library = CaseLibrary(embedder, index=index)
    entries = entries_from_source(source)
    chunks = [entries[i : i + chunk] for i in range(0, len(entries), chunk)]
    results: list = [None] * len(chunks)
    with cluster_client(scheduler, workers) as client:
        futures = [client.submit(embed_chunk, part, embedder, volumes, pure=False) for part in chunks]
        for position, result in completed(futures, progress, should_stop):
            results[position] = result
    failures: list = []
    for result in results:
        if result["embedder_sha256"] != library.embedder.sha256:
            raise MedaiError("a worker used other embedder weights than this process; install the same "
                             "napari-medai version on every worker")
        library.add_records(result["vectors"], result["records"])
        failures.extend(result["failures"])
    return library, failures
