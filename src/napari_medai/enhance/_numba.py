"""numba CPU back end of the CLAHE specification in ``_spec.py``.

Imported lazily by ``core.py`` (importing numba costs ~0.3 s, compiling the kernels a few seconds the
first time; ``cache=True`` keeps the machine code in ``__pycache__`` so later processes load it in
well under a second). Every kernel releases the GIL, so the widget's worker thread never blocks napari.

Layout: a batch of ``B`` volumes ``(B, Z, Y, X)``; a 2-D image is ``Z = 1`` with a z-kernel of 1, a
stack in ``slices`` mode is ``B = Z`` volumes of one slice each. All kernels take a ``[start, stop)``
range so that the driver can cut big jobs into pieces and report progress / honour cancel between them.

Threads: the kernels are serial, GIL-free numba functions; the driver cuts each piece into one range
per thread and runs them on a small thread pool of this module's own. numba's threading layer
(``parallel=True``) is not used, so nothing process-wide is chosen or started: the layer, its thread
count and ``OMP_*`` settings stay as the user (or napari, or another plugin) set them. The number of
threads is read from numba and never set here: ``NUMBA_NUM_THREADS``, or the calling thread's own numba
thread count when the caller has started numba's layer (numba keeps that count per thread).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

# One CLAHE at a time: the work buffer in _SCRATCH is shared. Concurrent callers wait here.
_LOCK = threading.RLock()

MAX_GRAY = 16383.0
_OPTS = {"cache": True, "nogil": True}


@njit(inline="always")
def _chunk_span(c, n, chunk):
    """Image ``b`` and element range ``[s, e)`` of flat chunk ``c``: each image's ``n`` elements are cut
    into chunks of ``chunk``, numbered image after image (the unit of work split between threads)."""
    nch = (n + chunk - 1) // chunk
    b = c // nch
    s = (c % nch) * chunk
    return b, s, min(s + chunk, n)


@njit(inline="always")
def _count_run(hist, seg, kx, k4, nbins):
    """Add the bins of ``seg[:kx]`` to ``hist`` as four interleaved sub-histograms (``nbins`` apart), which
    breaks the store-to-load dependency between neighbouring pixels of one bin; the caller sums them."""
    for w in range(0, k4, 4):
        hist[seg[w]] += 1
        hist[nbins + seg[w + 1]] += 1
        hist[2 * nbins + seg[w + 2]] += 1
        hist[3 * nbins + seg[w + 3]] += 1
    for w in range(k4, kx):
        hist[seg[w]] += 1


@njit(**_OPTS)
def quantise_lut(x2, lut2, offset, out2, c0, c1, chunk):
    """``out2[b, i] = lut2[b, x2[b, i] - offset]`` for flat chunks ``c0 <= c < c1`` of size ``chunk``."""
    n = x2.shape[1]
    for c in range(c0, c1):
        b, s, e = _chunk_span(c, n, chunk)
        xs = x2[b, s:e]
        os_ = out2[b, s:e]
        lut = lut2[b]
        for i in range(xs.size):
            # unsigned index: no negative-index wrap-around test in the loop
            os_[i] = lut[np.uint64(np.int64(xs[i]) - offset)]


@njit(**_OPTS)
def quantise_float(x2, mins, maxs, bin_size, out2, c0, c1, chunk):
    """Min-max (or window) rescale, round half to even on 2**14 levels, divide into bins."""
    n = x2.shape[1]
    bs = np.float64(bin_size)
    for c in range(c0, c1):
        b, s, e = _chunk_span(c, n, chunk)
        xs = x2[b, s:e]
        os_ = out2[b, s:e]
        mn = mins[b]
        rng = maxs[b] - mn
        if rng > 0:
            for i in range(xs.size):
                v = (np.float64(xs[i]) - mn) / rng
                v = min(max(v, 0.0), 1.0)
                # floor(q / bs) in float64 is exact for q < 2**14: no integer division in the loop
                os_[i] = np.uint16(np.floor(np.rint(v * MAX_GRAY) / bs))
        else:
            for i in range(xs.size):
                os_[i] = 0


@njit(**_OPTS)
def _clip_histogram(hist, clim):
    """scikit-image's ``clip_histogram``, step for step (see ``_spec.clip_histogram``)."""
    nb = hist.size
    n_excess = 0
    for i in range(nb):
        if hist[i] > clim:
            n_excess += hist[i] - clim
            hist[i] = clim
    bin_incr = n_excess // nb
    upper = clim - bin_incr
    for i in range(nb):
        if hist[i] < upper:
            hist[i] += bin_incr
            n_excess -= bin_incr
    for i in range(nb):
        h = hist[i]
        if h >= upper and h < clim:
            n_excess -= clim - h
            hist[i] = clim
    while n_excess > 0:
        prev = n_excess
        for index in range(nb):
            n_under = 0
            for i in range(nb):
                if hist[i] < clim:
                    n_under += 1
            if n_under == 0:  # nothing can change any more: scikit-image would loop on to the same end
                return
            step = max(1, n_under // n_excess)
            count = 0
            for i in range(index, nb, step):
                if hist[i] < clim:
                    hist[i] += 1
                    count += 1
            n_excess -= count
            if n_excess <= 0:
                break
        if prev == n_excess:
            break


@njit(**_OPTS)
def tile_maps(bins, iz, iy, ix, kz, ky, kx, nz, ny, nx, clim, maps, t0, t1):
    """Histogram, clip and map tiles ``t0 <= t < t1`` (flat over ``B * nz * ny * nx``) into ``maps``.

    One work buffer per call (allocating per tile costs more than counting a small tile). Four
    sub-histograms per tile: runs of equal bins (air, background) would otherwise serialise on one
    counter.
    """
    nbins = maps.shape[1]
    ke = kz * ky * kx
    scale = MAX_GRAY / ke
    per_b = nz * ny * nx
    X = bins.shape[3]
    k4 = kx - kx % 4
    sub = np.empty(4 * nbins, np.int32)
    hist = np.empty(nbins, np.int64)
    for t in range(t0, t1):
        b = t // per_b
        r = t % per_b
        tz = r // (ny * nx)
        ty = (r // nx) % ny
        tx = r % nx
        sub[:] = 0
        x0 = tx * kx
        inside = x0 + kx <= X  # no mirrored positions along x: index directly
        xi = ix[x0:x0 + kx]
        for u in range(kz):
            zz = iz[tz * kz + u]
            for v in range(ky):
                row = bins[b, zz, iy[ty * ky + v]]
                if inside:
                    _count_run(sub, row[x0:x0 + kx], kx, k4, nbins)
                else:
                    for w in range(kx):
                        sub[row[xi[w]]] += 1
        for i in range(nbins):
            hist[i] = sub[i] + sub[nbins + i] + sub[2 * nbins + i] + sub[3 * nbins + i]
        _clip_histogram(hist, clim)
        cum = 0
        for i in range(nbins):
            cum += hist[i]
            val = cum * scale
            if val > MAX_GRAY:
                val = MAX_GRAY
            maps[t, i] = np.float32(np.int64(val))


@njit(**_OPTS)
def band_maps(bins, iz, iy, ix, kz, ky, kx, nz, ny, nx, clim, maps, g0, g1):
    """Like :func:`tile_maps`, but over bands ``g0 <= g < g1`` (a band = the ``nx`` tiles of one
    (b, tz, ty), flat over ``B * nz * ny``) that stream whole image rows: faster when the image is
    far larger than the caches (the rows come from memory with the prefetcher's help)."""
    nbins = maps.shape[1]
    ke = kz * ky * kx
    scale = MAX_GRAY / ke
    X = bins.shape[3]
    k4 = kx - kx % 4
    stride = 4 * nbins
    for g in range(g0, g1):
        b = g // (nz * ny)
        tz = (g // ny) % nz
        ty = g % ny
        sub = np.zeros(nx * stride, np.int32)
        for u in range(kz):
            zz = iz[tz * kz + u]
            for v in range(ky):
                row = bins[b, zz, iy[ty * ky + v]]
                for tx in range(nx):
                    h = sub[tx * stride:(tx + 1) * stride]
                    x0 = tx * kx
                    if x0 + kx <= X:
                        _count_run(h, row[x0:x0 + kx], kx, k4, nbins)
                    else:
                        xi = ix[x0:x0 + kx]
                        for w in range(kx):
                            h[row[xi[w]]] += 1
        hist = np.empty(nbins, np.int64)
        for tx in range(nx):
            o = tx * stride
            for i in range(nbins):
                hist[i] = sub[o + i] + sub[o + nbins + i] + sub[o + 2 * nbins + i] + sub[o + 3 * nbins + i]
            _clip_histogram(hist, clim)
            t = g * nx + tx
            cum = 0
            for i in range(nbins):
                cum += hist[i]
                val = cum * scale
                if val > MAX_GRAY:
                    val = MAX_GRAY
                maps[t, i] = np.float32(np.int64(val))


@njit(fastmath=True, **_OPTS)
def blend_planes(maps, zlo, zhi, zf, Z, nz, nyx, pbase, p0, p1, pmaps):
    """z-blend the tile maps of planes ``p0 <= p < p1``:
    ``pmaps[p - pbase, t] = (1-cz) maps[lo, t] + cz maps[hi, t]``."""
    nbins = maps.shape[1]
    for p in range(p0, p1):
        b = p // Z
        z = p % Z
        cz = np.float32(zf[z])
        wz0 = np.float32(1.0 - zf[z])
        lo = (b * nz + zlo[z]) * nyx
        hi = (b * nz + zhi[z]) * nyx
        for t in range(nyx):
            ml = maps[lo + t]
            mh = maps[hi + t]
            o = pmaps[(p - pbase) * nyx + t]
            for i in range(nbins):
                o[i] = wz0 * ml[i] + cz * mh[i]


@njit(fastmath=True, **_OPTS)
def interpolate(bins, pmaps, ylo, yhi, yf, xw0, xw1, seg, seg_lo, seg_hi, ny, nx, pbase, r0, r1, out, rmin,
                rmax):
    """Bilinear blend of the (z-blended) tile maps into rows ``r0 <= r < r1`` of ``out`` (uint16).

    ``bins`` / ``out`` are ``(planes, Y, X)``, rows numbered plane after plane; ``pmaps`` holds
    ``ny * nx`` maps per plane, starting at plane ``pbase``. The blend runs in float32 and is truncated
    to an integer grey level as scikit-image does. ``seg`` splits a row into runs of x that share the same two x tiles.
    ``rmin`` / ``rmax`` receive each row's extreme levels for the final rescale.
    """
    Y = bins.shape[1]
    nseg = seg.shape[0] - 1
    nyx = ny * nx
    for r in range(r0, r1):
        p = r // Y
        y = r % Y
        cy = np.float32(yf[y])
        wy0 = np.float32(1.0 - yf[y])
        t0 = (p - pbase) * nyx + ylo[y] * nx
        t1 = (p - pbase) * nyx + yhi[y] * nx
        row = bins[p, y]
        orow = out[p, y]
        lo = 65535
        hi = 0
        for g in range(nseg):
            s = seg[g]
            e = seg[g + 1]
            m0 = pmaps[t0 + seg_lo[g]]
            m1 = pmaps[t0 + seg_hi[g]]
            m2 = pmaps[t1 + seg_lo[g]]
            m3 = pmaps[t1 + seg_hi[g]]
            rs = row[s:e]
            os_ = orow[s:e]
            w0s = xw0[s:e]
            w1s = xw1[s:e]
            for i in range(rs.size):
                v = rs[i]
                q = np.uint16(wy0 * (w0s[i] * m0[v] + w1s[i] * m1[v]) + cy * (w0s[i] * m2[v] + w1s[i] * m3[v]))
                os_[i] = q
                lo = min(lo, q)
                hi = max(hi, q)
        rmin[r] = lo
        rmax[r] = hi


@njit(**_OPTS)
def rescale(levels2, lo, hi, out2, c0, c1, chunk):
    """Final per-image min-max rescale of the integer levels (``rescale_intensity``) to float32."""
    n = levels2.shape[1]
    for c in range(c0, c1):
        b, s, e = _chunk_span(c, n, chunk)
        ls = levels2[b, s:e]
        os_ = out2[b, s:e]
        mn = np.float64(lo[b])
        d = np.float64(hi[b]) - mn
        if d > 0:
            inv = 1.0 / d  # float64 reciprocal: same float32 result as dividing, and vectorises
            for i in range(ls.size):
                os_[i] = np.float32((np.float64(ls[i]) - mn) * inv)
        else:
            for i in range(ls.size):
                os_[i] = np.float32(min(np.float64(ls[i]), 1.0))


# --------------------------------------------------------------------------------------------------
# driver


def _pieces(total: int, per_piece: int):
    per_piece = max(1, int(per_piece))
    for start in range(0, total, per_piece):
        yield start, min(total, start + per_piece)


_POOL: dict = {}
_POOL_LOCK = threading.Lock()


def n_threads() -> int:
    """Threads CLAHE uses, read and never set: numba's count for the calling thread (numba keeps it per
    thread) once the caller has started numba's threading layer, else ``NUMBA_NUM_THREADS``. Reading it
    starts nothing."""
    try:
        from numba.np.ufunc import parallel as _parallel

        if getattr(_parallel, "_is_initialized", False):
            return max(1, int(numba.get_num_threads()))
    except Exception:  # pragma: no cover - numba internals moved: fall back to the configured count
        pass
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _pool(workers: int) -> ThreadPoolExecutor:
    """This module's own worker threads (idle ones sleep on a queue: no spinning, no global state)."""
    with _POOL_LOCK:
        pool = _POOL.get("pool")
        if pool is None or _POOL.get("workers", 0) < workers:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="napari-medai-clahe")
            _POOL.update(pool=pool, workers=workers)
        return pool


def _split(fn, lo: int, hi: int, threads: int, min_items: int = 1) -> None:
    """Run ``fn(a, b)`` over ``[lo, hi)`` cut into one contiguous range per thread (at least
    ``min_items`` items each); the calling thread takes the first range."""
    n = hi - lo
    k = max(1, min(threads, n // max(1, min_items)))
    if k == 1:
        if n > 0:
            fn(lo, hi)
        return
    bounds = [lo + i * n // k for i in range(k + 1)]
    futures = [_pool(threads - 1).submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


_SCRATCH = {}
_SCRATCH_KEEP = 1 << 24  # keep up to 16 M bins (32 MB) between calls: no page faults on re-runs


def _scratch(n: int) -> np.ndarray:
    """A uint16 work buffer of ``n`` elements, reused between calls (callers hold _LOCK)."""
    buf = _SCRATCH.get("bins")
    if buf is not None and buf.size >= n:
        return buf[:n]
    buf = np.empty(n, dtype=np.uint16)
    if n <= _SCRATCH_KEEP:
        _SCRATCH["bins"] = buf
    return buf


_CHUNK = 1 << 16
_BAND_ABOVE = 1 << 24  # voxels
_TARGET = 1 << 22  # about 4 M voxels (a few ms) between progress reports / cancel checks


def run(x, value_range, mins, maxs, kernel, nbins, clim, lut_limit, report):
    """CLAHE of a batch ``x`` ``(B, Z, Y, X)`` (C-contiguous, any real dtype) -> float32 ``(B, Z, Y, X)``.

    ``value_range``: (lowest, highest) value in ``x``; ``mins`` / ``maxs``: per-image range mapped onto
    [0, 1] (the data range, or the intensity window). ``report(fraction_done)`` is called between
    pieces; it raises to cancel.
    """
    with _LOCK:
        return _run(x, value_range, mins, maxs, kernel, nbins, clim, lut_limit, report)


def _run(x, value_range, mins, maxs, kernel, nbins, clim, lut_limit, report):
    from . import _spec

    threads = n_threads()
    B, Z, Y, X = x.shape
    n = Z * Y * X
    x2 = x.reshape(B, n)
    bins = _scratch(B * Z * Y * X).reshape(B, Z, Y, X)
    b2 = bins.reshape(B, n)
    nch = (n + _CHUNK - 1) // _CHUNK
    per = max(1, _TARGET // _CHUNK)
    bs = _spec.bin_size(nbins)
    lut = None
    if x.dtype.kind in "iu":
        lo_v, hi_v = int(value_range[0]), int(value_range[1])
        if (hi_v - lo_v + 1) * B <= lut_limit:
            lut = _spec.quantise_lut(lo_v, hi_v, mins, maxs, nbins)
    for c0, c1 in _pieces(B * nch, per):
        if lut is not None:
            _split(lambda a, b: quantise_lut(x2, lut, lo_v, b2, a, b, _CHUNK), c0, c1, threads)
        else:
            _split(lambda a, b: quantise_float(x2, mins, maxs, bs, b2, a, b, _CHUNK), c0, c1, threads)
        report(0.1 * c1 / (B * nch))

    kz, ky, kx = kernel
    az, ay, ax = (_spec.axis_geometry(s, k) for s, k in zip((Z, Y, X), kernel))
    nz, ny, nx = az.n_tiles, ay.n_tiles, ax.n_tiles
    nt = B * nz * ny * nx
    maps = np.empty((nt, nbins), dtype=np.float32)
    hz, hy, hx = (a.hist_index.astype(np.uint64) for a in (az, ay, ax))
    if bins.size > _BAND_ABOVE:
        # far bigger than the caches: stream whole rows per band of tiles (measured 35 vs 58 ms on
        # 146x512x512; on 1-16 M voxels tile by tile was faster: 0.6 vs 1.0 ms on 1024x1024)
        n_bands = B * nz * ny
        for g0, g1 in _pieces(n_bands, _TARGET // (kz * ky * kx * nx)):
            _split(lambda a, b: band_maps(bins, hz, hy, hx, kz, ky, kx, nz, ny, nx, clim, maps, a, b),
                   g0, g1, threads)
            report(0.1 + 0.3 * g1 / n_bands)
    else:
        for t0, t1 in _pieces(nt, _TARGET // (kz * ky * kx)):
            _split(lambda a, b: tile_maps(bins, hz, hy, hx, kz, ky, kx, nz, ny, nx, clim, maps, a, b),
                   t0, t1, threads)
            report(0.1 + 0.3 * t1 / nt)

    P = B * Z
    planes = bins.reshape(P, Y, X)
    levels = planes  # each row is read, then overwritten with its grey levels, by one thread: in place
    rmin = np.empty(P * Y, dtype=np.uint16)
    rmax = np.empty(P * Y, dtype=np.uint16)
    nyx = ny * nx
    xw0, xw1 = (1.0 - ax.frac).astype(np.float32), ax.frac.astype(np.float32)
    seg, seg_lo, seg_hi = _spec.runs(ax)
    per_planes = max(1, _TARGET // (Y * X))
    scratch = None
    for p0, p1 in _pieces(P, per_planes):
        if nz == 1 and Z == 1:
            pmaps = maps[p0 * nyx:p1 * nyx]  # 2-D / slices: one map set per plane already
        else:
            if scratch is None:
                scratch = np.empty((min(P, per_planes) * nyx, nbins), dtype=np.float32)
            pmaps = scratch[: (p1 - p0) * nyx]
            _split(lambda a, b, p0=p0, pm=pmaps: blend_planes(maps, az.lo, az.hi, az.frac, Z, nz, nyx, p0, a, b, pm),
                   p0, p1, threads)
        _split(lambda a, b, p0=p0, pm=pmaps: interpolate(planes, pm, ay.lo, ay.hi, ay.frac, xw0, xw1, seg, seg_lo,
                                                         seg_hi, ny, nx, p0, a, b, levels, rmin, rmax),
               p0 * Y, p1 * Y, threads)
        report(0.4 + 0.5 * p1 / P)
    lo = rmin.reshape(B, Z * Y).min(axis=1)
    hi = rmax.reshape(B, Z * Y).max(axis=1)
    out = np.empty((B, Z, Y, X), dtype=np.float32)
    lv2, out2 = levels.reshape(B, n), out.reshape(B, n)
    for c0, c1 in _pieces(B * nch, per * 2):
        _split(lambda a, b: rescale(lv2, lo, hi, out2, a, b, _CHUNK), c0, c1, threads)
        report(0.9 + 0.1 * c1 / (B * nch))
    return out
