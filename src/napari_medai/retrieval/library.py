"""A library of labelled cases, searchable by image similarity (Euclidean distance between
embedder descriptors).

    lib = CaseLibrary.build("cases/")          # one sub-folder per class, or a CSV path,label[,patient_id]
    hits = lib.query(image, k=10)              # nearest first: hit.label, hit.path, hit.distance
    lib.save("cases.medlib"); lib = CaseLibrary.load("cases.medlib")

Storage: one SQLite file. Table ``cases`` holds case id, label, path, patient id (only when the
user supplied one), slice / ROI, a PNG thumbnail and the descriptor (float32 blob); table ``meta``
holds the embedder's name and SHA-256, the descriptor size and the creation time. A library is
only ever queried with the embedder that built it.

Search: exact (faiss ``IndexFlatL2``, or numpy when faiss is missing) by default; above
``hnsw_threshold`` cases an HNSW graph (faiss ``IndexHNSWFlat``) is built on first query.

Domain: ``query`` returns a :class:`QueryResult` (a list of hits) that says whether the query is
``out_of_domain`` and marks each hit ``close``, against a calibration computed from the library itself
(:class:`DomainCalibration`: leave-one-out nearest-neighbour distances of its descriptors, and the
spread of simple image statistics of its thumbnails, and whether its cases' raw planes were CT in HU,
meta key ``hu_cases``). It is stored in the file (meta key ``domain_calibration``); files saved before
it existed, or with an older calibration version, are calibrated when first queried. The query's raw
plane is checked for CT values in HU before the embedder normalises them away.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import MedaiError
from ..io.planes import parse_xywh
from ..runtime.progress import check_stop
from .embedder import Embedder, get_embedder
from .preprocess import to_gray

FORMAT_VERSION = "1"
THUMB_SIZE = 96
HNSW_THRESHOLD = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 384  # recall@10 0.999 at 1 M x 384-d (128: 0.977); benchmarks/retrieve.py
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm", ".dicom", ".ima")


# --------------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One retrieved case."""

    case_id: int
    label: str
    path: str
    distance: float
    rank: int = 0
    patient_id: Optional[str] = None
    slice_index: Optional[int] = None
    roi: Optional[tuple] = None
    thumbnail_png: Optional[bytes] = field(default=None, repr=False)
    close: bool = True  # within the library's own nearest-neighbour distances (see DomainCalibration)

    @property
    def thumbnail(self) -> Optional[np.ndarray]:
        """The stored thumbnail as a uint8 array (THUMB_SIZE x THUMB_SIZE), or None."""
        if not self.thumbnail_png:
            return None
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.thumbnail_png)))

    def to_dict(self) -> dict:
        """The hit as JSON-ready values (distance rounded to 6 decimals; no thumbnail)."""
        return {
            "rank": self.rank,
            "case_id": self.case_id,
            "label": self.label,
            "path": self.path,
            "distance": round(float(self.distance), 6),
            "patient_id": self.patient_id,
            "slice": self.slice_index,
            "roi": list(self.roi) if self.roi else None,
            "close": bool(self.close),
        }


class QueryResult(list):
    """The hits of one query (a list of :class:`Hit`, nearest first) with the domain verdict:
    ``out_of_domain`` (the query is unlike the library's cases: do not read a label vote from it) and
    ``reasons`` (one line each). ``calibrated`` is False when the library is too small to calibrate."""

    def __init__(self, hits=(), *, out_of_domain: bool = False, reasons: Optional[list] = None,
                 calibrated: bool = True):
        super().__init__(hits)
        self.out_of_domain = bool(out_of_domain)
        self.reasons = list(reasons or [])
        self.calibrated = bool(calibrated)

    def to_dict(self) -> dict:
        """The domain verdict and the hits as JSON-ready values (what ``retrieve query --json`` prints)."""
        return {"out_of_domain": self.out_of_domain, "reasons": list(self.reasons), "calibrated": self.calibrated,
                "hits": [h.to_dict() for h in self]}


@dataclass
class CaseEntry:
    """A case to add: an image file / DICOM folder, its label, and optionally patient id, slice, ROI."""

    path: str
    label: str
    patient_id: Optional[str] = None
    slice_index: Optional[int] = None
    roi: Optional[tuple] = None  # (x, y, w, h) in pixels, x = column


def vote(hits: Sequence[Hit]) -> list[tuple[str, int, float]]:
    """Label vote over hits: [(label, count, fraction)], most frequent first (ties: nearer first)."""
    if not hits:
        return []
    counts = Counter(h.label for h in hits)
    best = {}
    for h in hits:
        best.setdefault(h.label, h.rank)
    order = sorted(counts, key=lambda lab: (-counts[lab], best[lab]))
    return [(lab, counts[lab], counts[lab] / len(hits)) for lab in order]


# --------------------------------------------------------------------------------------------
def parse_roi(roi: Any) -> Optional[tuple]:
    """A case's or query's ROI as ``(x, y, w, h)`` integer pixels (x = column), or None when not given.

    Reads the numbers with the project's one X,Y,W,H parser (:func:`~napari_medai.io.planes.parse_xywh`),
    then takes whole pixels as before: a string (CSV ``roi`` column, library file, ``--roi``) is
    rounded, a sequence of numbers truncated with ``int``.

    Raises:
        MedaiError: not four finite numbers, or a width or height under one pixel after that.
    """
    if roi is None or (isinstance(roi, str) and roi == ""):
        return None
    whole = (lambda v: int(round(v))) if isinstance(roi, str) else int
    roi = tuple(whole(v) for v in parse_xywh(roi))
    if roi[2] <= 0 or roi[3] <= 0:
        raise MedaiError(f"ROI {roi} is not X,Y,W,H with positive width and height")
    return roi


def crop_roi(image2d: np.ndarray, roi: Optional[tuple]) -> np.ndarray:
    """The part of ``image2d`` inside ``roi`` (x, y, w, h), clipped to the image; the whole image when None.

    Raises:
        MedaiError: the clipped region is under 4 pixels on a side (too small to embed).
    """
    if roi is None:
        return image2d
    x, y, w, h = roi
    H, W = image2d.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise MedaiError(f"ROI {roi} lies outside the {W}x{H} image or is smaller than 4 pixels; redraw it")
    return image2d[y0:y1, x0:x1]


def select_planes(
    data: np.ndarray, rgb: bool, slice_index: Optional[int], volumes: str
) -> list[tuple[Optional[int], np.ndarray]]:
    """[(slice index or None, 2D image)] for an image or a volume (z, y, x)."""
    a = np.asarray(data)
    if rgb or a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4):
        return [(None, to_gray(a))]
    if a.ndim == 4 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(-1)
    if a.ndim != 3:
        raise MedaiError(f"cannot take 2D cases from an array of shape {a.shape}; give 2D images or 3D volumes")
    if slice_index is not None:
        if not -a.shape[0] <= slice_index < a.shape[0]:
            raise MedaiError(f"slice {slice_index} is outside the volume's {a.shape[0]} slices")
        return [(int(slice_index) % a.shape[0], a[slice_index].astype(np.float32))]
    if volumes == "all":
        return [(i, a[i].astype(np.float32)) for i in range(a.shape[0])]
    if volumes == "middle":
        i = a.shape[0] // 2
        return [(i, a[i].astype(np.float32))]
    raise MedaiError(f"volumes={volumes!r}; use 'middle' or 'all'")


def _is_image_path(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith("."):
        return False
    if p.is_dir():
        return any(f.suffix.lower() in (".dcm", ".dicom", ".ima") or f.suffix == "" for f in p.iterdir() if f.is_file())
    return any(name.endswith(s) for s in _IMAGE_SUFFIXES)


def entries_from_source(source: Any) -> list[CaseEntry]:
    """Case entries from a folder (one sub-folder per class), a CSV, or a list of CaseEntry."""
    if isinstance(source, (list, tuple)):
        out = []
        for e in source:
            if isinstance(e, CaseEntry):
                out.append(e)
            elif isinstance(e, dict):
                out.append(
                    CaseEntry(str(e["path"]), str(e["label"]), e.get("patient_id"), e.get("slice"),
                              parse_roi(e.get("roi")))
                )
            else:
                path, label = e[0], e[1]
                out.append(CaseEntry(str(path), str(label), *(list(e[2:3]) or [None])))
        return out
    src = Path(str(source)).expanduser()
    if not src.exists():
        raise MedaiError(f"{src} does not exist; give a folder with one sub-folder per class, or a CSV")
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise MedaiError(
                f"{src} is not a CSV; give a folder with one sub-folder per class, or a CSV (path,label[,patient_id])"
            )
        return _entries_from_csv(src)
    entries = []
    class_dirs = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    for d in class_dirs:
        for p in sorted(d.iterdir(), key=lambda q: _natural_key(q.name)):
            if _is_image_path(p):
                entries.append(CaseEntry(str(p.resolve()), d.name))
    if not entries:
        raise MedaiError(
            f"no images found in sub-folders of {src}; put each class's images in its own sub-folder "
            "(e.g. cases/glioma/*.png) or give a CSV with path,label"
        )
    return entries


def _natural_key(name: str):
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _entries_from_csv(path: Path) -> list[CaseEntry]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in cols or "label" not in cols:
            raise MedaiError(
                f"{path} needs the columns path and label (optional: patient_id, slice, roi); found {cols}"
            )
        entries = []
        for i, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("path"):
                continue
            p = Path(row["path"]).expanduser()
            if not p.is_absolute():
                p = (path.parent / p).resolve()
            if not row.get("label"):
                raise MedaiError(f"{path} line {i}: empty label; give every case a label")
            sl = row.get("slice", "")
            try:
                sl = int(sl) if sl != "" else None
            except ValueError:
                raise MedaiError(f"{path} line {i}: slice {sl!r} is not an integer") from None
            entries.append(
                CaseEntry(str(p), row["label"], row.get("patient_id") or None, sl, parse_roi(row.get("roi")))
            )
    if not entries:
        raise MedaiError(f"{path} lists no cases; add rows path,label")
    return entries


def _thumbnail_png(prepared: np.ndarray) -> bytes:
    from PIL import Image

    from .domain import thumbnail

    buf = io.BytesIO()
    Image.fromarray(thumbnail(prepared, THUMB_SIZE)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _decode_png(data: Optional[bytes]) -> Optional[np.ndarray]:
    if not data:
        return None
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _grow(view: np.ndarray, buf: Optional[np.ndarray], new: np.ndarray):
    """Append ``new`` to ``view`` (a prefix of ``buf``); returns (new view, buffer)."""
    n, m = len(view), len(new)
    if buf is None or view.base is not buf or n + m > len(buf):
        buf = np.empty((max(n + m, 2 * len(view), 1024),) + view.shape[1:], view.dtype)
        buf[:n] = view
    buf[n : n + m] = new
    return buf[: n + m], buf


def check_library_path(path: str | os.PathLike) -> Path:
    """Where a library may be saved (checked before a build starts, and again by ``save``): not a folder,
    not an existing file other than a case library (a case list, an image), in a folder that can be written
    (created if missing)."""
    from ..io.writers import ensure_output_folder

    path = Path(path).expanduser()
    if path.is_dir():
        raise MedaiError(f"{path} is a folder; give a file name such as cases.medlib")
    if path.is_file() and not _is_library_file(path):
        raise MedaiError(f"{path} exists and is not a case library (an input?); "
                         "give a new file name such as cases.medlib")
    ensure_output_folder(path.parent)
    return path


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only SQLite connection; ``as_uri()`` percent-encodes '#', '?' and '%', which a hand-made
    "file:" URI would read as URI syntax."""
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def _is_library_file(path: Path) -> bool:
    """Whether ``path`` is a napari-medai case library (SQLite with the library's ``meta`` table)."""
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\0":
            return False
    try:
        con = _connect_read_only(path)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False
    return bool(row) and row[0] == "napari-medai case library"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
def embed_planes(embedder: Embedder, items) -> tuple[np.ndarray, list[dict]]:
    """Descriptors and case records for ``(CaseEntry, slice, plane)`` items."""
    from .domain import is_hu_like

    prepared = np.stack([embedder.prepare(p) for _, _, p in items])
    vecs = embedder.embed_prepared(prepared).astype(np.float32)
    metas = [
        {
            "label": str(e.label),
            "path": str(e.path),
            "patient_id": None if e.patient_id in (None, "") else str(e.patient_id),
            "slice": sl,
            "roi": e.roi,
            "thumbnail": _thumbnail_png(prep),
            "hu": is_hu_like(plane),  # the raw plane held CT air in HU (kept apart from the case record)
        }
        for (e, sl, plane), prep in zip(items, prepared)
    ]
    return vecs, metas


def embed_entries(entries: Sequence[CaseEntry], embedder: Embedder, volumes: str = "middle"):
    """Read and embed cases; returns ``(vectors, records, failures)``. A file that cannot be read
    becomes a failure ``(path, message)`` instead of stopping the others (used by parallel builds)."""
    from ..io.readers import load_image

    items, failures = [], []
    for e in entries:
        try:
            img = load_image(e.path)
            for sl, plane in select_planes(img.data, img.rgb, e.slice_index, volumes):
                items.append((CaseEntry(e.path, e.label, e.patient_id, sl, e.roi), sl, crop_roi(plane, e.roi)))
        except MedaiError as exc:
            failures.append((str(e.path), str(exc)))
    if not items:
        return np.empty((0, embedder.dim), np.float32), [], failures
    vecs, metas = embed_planes(embedder, items)
    return vecs, metas, failures


class CaseLibrary:
    """Labelled cases with descriptors; exact or HNSW nearest-neighbour search."""

    def __init__(self, embedder: Any = None, *, index: str = "auto", hnsw_threshold: int = HNSW_THRESHOLD):
        self.embedder: Embedder = get_embedder(embedder)
        if index not in ("auto", "flat", "hnsw", "numpy"):
            raise MedaiError(f"index={index!r}; use auto, flat, hnsw or numpy")
        self.index_kind = index
        self.hnsw_threshold = int(hnsw_threshold)
        self.created = _now()
        self.path: Optional[Path] = None
        self._vectors = np.empty((0, self.embedder.dim), np.float32)
        self._vbuf = self._ibuf = self._abuf = None
        self._ids = np.empty(0, np.int64)
        self._alive = np.empty(0, bool)
        self._meta: dict[int, dict] = {}
        self._next_id = 1
        self._index = None
        self._index_used: Optional[str] = None
        self._index_n = 0  # number of positions in the index
        self._calibration = None  # DomainCalibration, computed on demand, dropped when the cases change
        self._hu: dict[int, bool] = {}  # case id -> its raw plane was CT in HU (unknown for older files)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        source: Any,
        *,
        embedder: Any = None,
        progress=None,
        should_stop=None,
        volumes: str = "middle",
        index: str = "auto",
        hnsw_threshold: int = HNSW_THRESHOLD,
    ) -> CaseLibrary:
        """Build from a folder (one sub-folder per class), a CSV (path, label[, patient_id, slice, roi])
        or a list of :class:`CaseEntry`. ``volumes``: for 3D inputs without a ``slice``, take the
        middle slice ("middle") or one case per slice ("all")."""
        lib = cls(embedder, index=index, hnsw_threshold=hnsw_threshold)
        lib.add(source, progress=progress, should_stop=should_stop, volumes=volumes)
        return lib

    def add(
        self, source: Any, *, progress=None, should_stop=None, volumes: str = "middle", batch: int = 64
    ) -> list[int]:
        """Add cases from a folder, CSV or list of :class:`CaseEntry`; returns the new case ids."""
        from ..io.readers import load_image

        entries = entries_from_source(source)
        n = len(entries)
        new_ids: list[int] = []
        pending: list[tuple[CaseEntry, Optional[int], np.ndarray]] = []
        for i, e in enumerate(entries):
            check_stop(should_stop)
            img = load_image(e.path)
            for sl, plane in select_planes(img.data, img.rgb, e.slice_index, volumes):
                pending.append((CaseEntry(e.path, e.label, e.patient_id, sl, e.roi), sl, crop_roi(plane, e.roi)))
            if len(pending) >= batch or i == n - 1:
                new_ids += self._add_planes(pending, should_stop)
                pending = []
            if progress is not None:
                progress(i + 1, n)
        return new_ids

    def add_images(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[str],
        *,
        paths: Optional[Sequence[str]] = None,
        patient_ids: Optional[Sequence[Optional[str]]] = None,
        progress=None,
        should_stop=None,
    ) -> list[int]:
        """Add in-memory 2D images with labels (paths are stored as given, e.g. a layer name)."""
        if len(images) != len(labels):
            raise MedaiError(f"{len(images)} images but {len(labels)} labels; give one label per image")
        items = []
        for i, (im, lab) in enumerate(zip(images, labels)):
            p = str(paths[i]) if paths is not None else f"<image {i}>"
            pid = patient_ids[i] if patient_ids is not None else None
            items.append((CaseEntry(p, str(lab), pid), None, to_gray(im)))
        ids = []
        for s in range(0, len(items), 64):
            ids += self._add_planes(items[s : s + 64], should_stop)
            if progress is not None:
                progress(min(len(items), s + 64), len(items))
        return ids

    def add_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        *,
        paths: Optional[Sequence[str]] = None,
        patient_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> list[int]:
        """Add precomputed descriptors (made by this library's embedder) without thumbnails."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if len(vectors) != len(labels):
            raise MedaiError(f"{len(vectors)} descriptors but {len(labels)} labels; give one label per descriptor")
        ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        self._next_id += len(vectors)
        added = _now()
        for i, cid in enumerate(ids.tolist()):
            self._meta[cid] = {
                "label": str(labels[i]),
                "path": str(paths[i]) if paths is not None else "",
                "patient_id": None if patient_ids is None or patient_ids[i] in (None, "") else str(patient_ids[i]),
                "slice": None,
                "roi": None,
                "thumbnail": None,
                "added": added,
            }
        self._append_vectors(vectors, ids)
        return ids.tolist()

    def _add_planes(self, items, should_stop) -> list[int]:
        if not items:
            return []
        check_stop(should_stop)
        vecs, metas = embed_planes(self.embedder, items)
        return self.add_records(vecs, metas)

    def add_records(self, vectors: np.ndarray, metas: Sequence[dict]) -> list[int]:
        """Add descriptors made elsewhere by this library's embedder (e.g. on Dask workers), with their
        case records (label, path, patient_id, slice, roi, thumbnail), as :func:`embed_planes` returns."""
        if len(vectors) != len(metas):
            raise MedaiError(f"{len(vectors)} descriptors but {len(metas)} case records")
        if not len(metas):
            return []
        ids = list(range(self._next_id, self._next_id + len(metas)))
        self._next_id += len(metas)
        added = _now()
        for cid, meta in zip(ids, metas):
            meta = dict(meta)
            hu = meta.pop("hu", None)
            if hu is not None:
                self._hu[cid] = bool(hu)
            self._meta[cid] = {**meta, "added": added}
        self._append_vectors(np.asarray(vectors, np.float32), np.asarray(ids, np.int64))
        return ids

    def _append_vectors(self, vecs: np.ndarray, ids: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vecs, np.float32)
        self._calibration = None
        if vecs.ndim != 2 or vecs.shape[1] != self.embedder.dim:
            raise MedaiError(f"descriptors of size {vecs.shape[-1]} do not fit this library ({self.embedder.dim})")
        # amortised growth: buffers double, so building in small batches stays linear
        self._vectors, self._vbuf = _grow(self._vectors, self._vbuf, vecs)
        self._ids, self._ibuf = _grow(self._ids, self._ibuf, ids)
        self._alive, self._abuf = _grow(self._alive, self._abuf, np.ones(len(ids), bool))
        if self._index is not None:
            wanted = self._wanted_index()
            if wanted == self._index_used and wanted != "numpy":
                self._index.add(vecs)
                self._index_n += len(vecs)
            else:
                self._index = None

    def remove(self, case_ids: Iterable[int]) -> int:
        """Remove cases by id; returns how many were removed. Unknown ids are refused."""
        ids = [int(c) for c in case_ids]
        unknown = [c for c in ids if c not in self._meta]
        if unknown:
            raise MedaiError(f"unknown case ids {unknown[:5]}; list them with library.cases()")
        if not ids:
            return 0
        mask = np.isin(self._ids, np.asarray(ids, np.int64)) & self._alive
        self._alive[mask] = False
        self._calibration = None
        for c in ids:
            self._meta.pop(c, None)
            self._hu.pop(c, None)
        n_dead = int((~self._alive).sum())
        # HNSW keeps tombstones (rebuilding a big graph is slow), skipped at search time; it is
        # rebuilt once a fifth of it is dead. The other indexes compact at once.
        if self._index_used != "hnsw" or n_dead > 0.2 * len(self._ids):
            self._compact()
        return int(mask.sum())

    def _compact(self) -> None:
        keep = self._alive
        self._vectors = np.ascontiguousarray(self._vectors[keep])
        self._ids = self._ids[keep]
        self._alive = np.ones(len(self._ids), bool)
        self._index = None

    # ---- info ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._meta)

    @property
    def labels(self) -> list[str]:
        """The distinct case labels, sorted."""
        return sorted({m["label"] for m in self._meta.values()})

    @property
    def dim(self) -> int:
        """Descriptor length (the embedder's); every stored and query vector has it."""
        return self.embedder.dim

    def cases(self) -> list[dict]:
        """All cases (without thumbnails), by case id."""
        return [
            {"case_id": c, **{k: v for k, v in m.items() if k != "thumbnail"}}
            for c, m in sorted(self._meta.items())
        ]

    def case(self, case_id: int) -> dict:
        """One case's record (label, path, patient id, slice, ROI, thumbnail, added) by id.

        Raises:
            MedaiError: no case has that id.
        """
        if int(case_id) not in self._meta:
            raise MedaiError(f"unknown case id {case_id}")
        return {"case_id": int(case_id), **self._meta[int(case_id)]}

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(case ids, descriptors) of the live cases."""
        return self._ids[self._alive], self._vectors[self._alive]

    def summary(self) -> dict:
        """Counts per label, embedder identity, descriptor size and creation time (for ``retrieve info``)."""
        return {
            "cases": len(self),
            "labels": dict(Counter(m["label"] for m in self._meta.values())),
            "embedder": self.embedder.name,
            "embedder_sha256": self.embedder.sha256,
            "dim": self.dim,
            "created": self.created,
            "index": self._wanted_index(),
            "path": str(self.path) if self.path else None,
        }

    def __repr__(self) -> str:
        return f"CaseLibrary({len(self)} cases, labels={self.labels}, embedder={self.embedder.name})"

    # ---- search --------------------------------------------------------------------------
    def _wanted_index(self) -> str:
        if self.index_kind == "numpy":
            return "numpy"
        try:
            import faiss  # noqa: F401
        except ImportError:
            if self.index_kind == "hnsw":
                raise MedaiError("index='hnsw' needs faiss; pip install faiss-cpu") from None
            return "numpy"
        if self.index_kind == "auto":
            return "hnsw" if len(self._ids) >= self.hnsw_threshold else "flat"
        return self.index_kind

    def _get_index(self):
        wanted = self._wanted_index()
        if self._index is not None and self._index_used == wanted:
            return self._index
        self._index, self._index_used, self._index_n = None, wanted, len(self._vectors)
        if wanted == "numpy":
            return None
        import faiss

        d = self.dim
        if wanted == "flat":
            index = faiss.IndexFlatL2(d)
        else:
            index = faiss.IndexHNSWFlat(d, HNSW_M)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        if len(self._vectors):
            index.add(self._vectors)
        self._index = index
        return index

    def search_vectors(self, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Nearest live cases for descriptors q (n, dim): (distances (n, k), case ids (n, k)), nearest
        first; Euclidean distances; ids are -1 where fewer than k cases exist."""
        q = np.ascontiguousarray(np.atleast_2d(q), np.float32)
        if q.shape[1] != self.dim:
            raise MedaiError(f"query descriptor has {q.shape[1]} values, the library {self.dim}")
        k = int(k)
        if k < 1:
            raise MedaiError(f"k={k}; ask for at least one neighbour")
        n_total = len(self._vectors)
        n_dead = int((~self._alive).sum())
        kk = min(k + n_dead, n_total)
        if kk == 0 or n_dead == n_total:
            return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        index = self._get_index()
        params = None
        if index is not None and n_dead:
            # removed cases stay in the index as tombstones; a faiss ID selector skips them
            import faiss

            bits = np.packbits(self._alive, bitorder="little")
            sel = faiss.IDSelectorBitmap(n_total, faiss.swig_ptr(bits))
            if self._index_used == "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, 2 * k))
            else:
                params = faiss.SearchParameters(sel=sel)
            params._keep = (bits, sel)  # keep the buffers alive during the search
            kk = min(k, n_total - n_dead)
        if index is None:
            from .metrics import pairwise_sq_dists

            d2 = pairwise_sq_dists(q, self._vectors)
            if n_dead:
                d2[:, ~self._alive] = np.inf
            if kk < n_total:
                pos = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
            else:
                pos = np.tile(np.arange(n_total), (len(q), 1))
            dsel = np.take_along_axis(d2, pos, 1)
            o = np.argsort(dsel, axis=1, kind="stable")
            pos, dsel = np.take_along_axis(pos, o, 1), np.take_along_axis(dsel, o, 1)
        else:
            # faiss's OpenMP thread count is read, never set here: the process keeps the one it has
            if params is not None:
                dsel, pos = index.search(q, kk, params=params)
            else:
                if self._index_used == "hnsw":
                    index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * kk)
                dsel, pos = index.search(q, kk)
        dists = np.full((len(q), k), np.inf, np.float32)
        case_ids = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            p = pos[r]
            ok = (p >= 0) & (p < n_total)
            p, dd = p[ok], dsel[r][ok]
            live = self._alive[p]
            p, dd = p[live][:k], dd[live][:k]
            dists[r, : len(p)] = np.sqrt(np.maximum(dd, 0))
            case_ids[r, : len(p)] = self._ids[p]
        return dists, case_ids

    def _prepare_query(self, image: Any, roi: Any, slice_index: Optional[int]) -> np.ndarray:
        return self.embedder.prepare(self._query_plane(image, roi, slice_index))

    def _query_plane(self, image: Any, roi: Any, slice_index: Optional[int]) -> np.ndarray:
        """The query's raw 2-D plane (as loaded, ROI cropped), before the embedder prepares it."""
        rgb = False
        if isinstance(image, (str, os.PathLike)):
            from ..io.readers import load_image

            img = load_image(image)
            image, rgb = img.data, img.rgb
        planes = select_planes(np.asarray(image), rgb, slice_index, "middle")
        return crop_roi(planes[0][1], parse_roi(roi))

    def embed_query(self, image: Any, *, roi: Any = None, slice_index: Optional[int] = None) -> np.ndarray:
        """Descriptor of a query: a 2D array, a volume (with slice_index, default the middle slice),
        or a path to an image file."""
        return self.embedder.embed_prepared(self._prepare_query(image, roi, slice_index)[None])[0]

    def query(self, image: Any, k: int = 10, *, roi: Any = None, slice_index: Optional[int] = None) -> QueryResult:
        """The k most similar cases, nearest first, as a :class:`QueryResult` (a list of hits) that says
        whether the query is out of the library's domain and marks each hit ``close``."""
        if len(self) == 0:
            raise MedaiError("the library is empty; add cases before querying")
        from .domain import hu_air_share, image_stats, thumbnail

        plane = self._query_plane(image, roi, slice_index)
        prepared = self.embedder.prepare(plane)
        vec = self.embedder.embed_prepared(prepared[None])[0]
        blank = float(prepared.max() - prepared.min()) < 1e-6
        return self.query_vector(vec, k, stats=image_stats(thumbnail(prepared, THUMB_SIZE)), blank=blank,
                                 hu_share=hu_air_share(plane))

    def query_vector(self, vec: np.ndarray, k: int = 10, *, stats: Optional[np.ndarray] = None,
                     blank: bool = False, hu_share: Optional[float] = None) -> QueryResult:
        """Hits for a descriptor; the domain verdict uses the distances (and ``stats``, the query's
        :func:`~napari_medai.retrieval.domain.image_stats`, and ``hu_share``, its raw
        :func:`~napari_medai.retrieval.domain.hu_air_share`, when given)."""
        from .domain import verdict

        dists, case_ids = self.search_vectors(vec[None] if vec.ndim == 1 else vec, k)
        hits = []
        for r, (d, cid) in enumerate(zip(dists[0], case_ids[0])):
            if cid < 0:
                break
            m = self._meta[int(cid)]
            hits.append(
                Hit(int(cid), m["label"], m["path"], float(d), r + 1, m["patient_id"], m["slice"], m["roi"],
                    m["thumbnail"])
            )
        cal = self.calibration
        ood, reasons, close = verdict(cal, [h.distance for h in hits], stats, blank, hu_share)
        for h, c in zip(hits, close):
            h.close = bool(c)
        if not cal.calibrated:
            reasons.append(f"domain check not calibrated: the library has {len(self)} cases (at least 10 needed)")
        return QueryResult(hits, out_of_domain=ood, reasons=reasons, calibrated=cal.calibrated)

    # ---- domain calibration ----------------------------------------------------------------
    @property
    def calibration(self):
        """The library's :class:`~napari_medai.retrieval.domain.DomainCalibration` (computed now if
        the cases changed since, or the file predates it)."""
        if self._calibration is None or self._calibration.embedder_sha256 != self.embedder.sha256:
            self._calibration = self.calibrate_domain()
        return self._calibration

    def calibrate_domain(self):
        """Leave-one-out nearest-neighbour distances and thumbnail statistics of the live cases
        (at most ``domain.MAX_CALIBRATION`` of them, a seeded sample beyond)."""
        from .domain import calibrate

        ids, vecs = self.vectors()
        thumbs = [_decode_png(self._meta[int(c)].get("thumbnail")) for c in ids]
        hu = [self._hu.get(int(c)) for c in ids]
        return calibrate(self.embedder.sha256, ids, vecs, self.search_vectors, thumbs, hu_flags=hu)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the library to one SQLite file (atomically: temp file + rename)."""
        path = check_library_path(path)
        from ..io.writers import atomic_output

        with atomic_output(path, ".medlib") as tmp:
            con = sqlite3.connect(tmp)
            with con:
                con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                con.execute(
                    "CREATE TABLE cases (case_id INTEGER PRIMARY KEY, label TEXT NOT NULL, path TEXT, "
                    "patient_id TEXT, slice INTEGER, roi TEXT, thumbnail BLOB, added TEXT, vector BLOB NOT NULL)"
                )
                from .. import __version__ as version

                meta = {
                    "format": "napari-medai case library",
                    "format_version": FORMAT_VERSION,
                    "embedder_name": self.embedder.name,
                    "embedder_sha256": self.embedder.sha256,
                    "dim": str(self.dim),
                    "created": self.created,
                    "saved": _now(),
                    "next_id": str(self._next_id),
                    "index": self.index_kind,
                    "hnsw_threshold": str(self.hnsw_threshold),
                    "napari_medai_version": str(version),
                    "domain_calibration": self.calibration.to_json(),
                    # which cases' raw planes were CT in HU (ids by flag; cases not listed: unknown)
                    "hu_cases": json.dumps({"1": sorted(c for c, f in self._hu.items() if f and c in self._meta),
                                            "0": sorted(c for c, f in self._hu.items() if not f and c in self._meta)}),
                }
                con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
                ids, vecs = self.vectors()
                rows = (
                    (
                        int(cid),
                        m["label"],
                        m["path"],
                        m["patient_id"],
                        m["slice"],
                        ",".join(map(str, m["roi"])) if m["roi"] else None,
                        m["thumbnail"],
                        m["added"],
                        vec.tobytes(),
                    )
                    for cid, vec in zip(ids.tolist(), vecs)
                    for m in (self._meta[cid],)
                )
                con.executemany("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.close()
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, embedder: Any = None) -> CaseLibrary:
        """Open a saved library. ``embedder``: defaults to the one named in the file; a different
        embedder (other weights) is refused."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise MedaiError(f"{path} is not a case library file; build one with `napari-medai retrieve build`")
        con = None
        try:
            con = _connect_read_only(path)
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            if con is not None:
                con.close()
            raise MedaiError(
                f"{path} is not a case library (not SQLite or no meta table); "
                "build one with `napari-medai retrieve build`"
            ) from None
        try:
            if meta.get("format") != "napari-medai case library":
                raise MedaiError(f"{path} is not a napari-medai case library")
            if meta.get("format_version") != FORMAT_VERSION:
                raise MedaiError(
                    f"{path} has library format {meta.get('format_version')}; "
                    f"this version reads {FORMAT_VERSION}: rebuild it"
                )
            name, sha = meta["embedder_name"], meta["embedder_sha256"]
            if embedder is None:
                try:
                    emb = get_embedder(name)
                except MedaiError as e:
                    raise MedaiError(
                        f"the library was built with embedder '{name}', which is not available here ({e}); "
                        "pass that embedder's model folder"
                    ) from None
            else:
                emb = get_embedder(embedder)
            if emb.sha256 != sha:
                raise MedaiError(
                    f"library {path.name} was built with embedder '{name}' (sha256 {sha[:12]}…) but the embedder "
                    f"given is '{emb.name}' (sha256 {emb.sha256[:12]}…); descriptors are not comparable: rebuild "
                    "the library with this embedder or load it with the original one"
                )
            if int(meta["dim"]) != emb.dim:
                raise MedaiError(
                    f"library descriptors have {meta['dim']} values but embedder '{emb.name}' makes {emb.dim}"
                )
            lib = cls(emb, index=meta.get("index", "auto"),
                      hnsw_threshold=int(meta.get("hnsw_threshold", HNSW_THRESHOLD)))
            lib.created = meta.get("created", lib.created)
            lib._next_id = int(meta.get("next_id", 1))
            stored = meta.get("domain_calibration")
            stored_hu = meta.get("hu_cases")
            rows = con.execute(
                "SELECT case_id, label, path, patient_id, slice, roi, thumbnail, added, vector "
                "FROM cases ORDER BY case_id"
            ).fetchall()
        finally:
            con.close()
        dim = emb.dim
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        if rows:
            vecs = np.frombuffer(b"".join(r[8] for r in rows), np.float32).reshape(len(rows), dim).copy()
        else:
            vecs = np.empty((0, dim), np.float32)
        for r in rows:
            lib._meta[int(r[0])] = {
                "label": r[1],
                "path": r[2],
                "patient_id": r[3],
                "slice": r[4],
                "roi": parse_roi(r[5]) if r[5] else None,
                "thumbnail": r[6],
                "added": r[7],
            }
        if stored_hu:  # files saved before it: unknown (the calibration falls back on the modality)
            try:
                flags = json.loads(stored_hu)
                lib._hu = {int(c): flag == "1" for flag in ("0", "1") for c in flags.get(flag, [])
                           if int(c) in lib._meta}
            except (ValueError, TypeError, AttributeError):
                lib._hu = {}
        lib._vectors, lib._ids, lib._alive = vecs, ids, np.ones(len(ids), bool)
        lib._next_id = max(lib._next_id, int(ids.max()) + 1 if len(ids) else 1)
        if stored:
            from .domain import DomainCalibration

            cal = DomainCalibration.from_json(stored)
            if cal is not None and cal.embedder_sha256 == emb.sha256 and cal.n_cases == len(ids):
                lib._calibration = cal
        # files saved before the calibration existed are calibrated on first query (``calibration``)
        lib.path = path
        return lib
