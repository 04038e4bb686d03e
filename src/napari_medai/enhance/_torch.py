"""torch back end of the CLAHE specification in ``_spec.py`` (CUDA, MPS, and the CPU on request).

Vectorised over tiles and voxels: tile histograms with one ``bincount`` over (tile, bin) keys, the
clipping loop run for all tiles at once (each tile keeps its own position in scikit-image's
redistribution loop), and the 2**ndim corner lookups as gathers. Arithmetic follows the spec in
float64 where the device has it (CPU, CUDA); MPS has no float64, so there it runs in float32 and may
differ from scikit-image by one grey level in 16383 on a few pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _spec

_TARGET = 1 << 24  # voxels per piece: bounds the int64 temporaries to a few hundred MB


def _pieces(total: int, per_piece: int):
    per_piece = max(1, int(per_piece))
    for start in range(0, total, per_piece):
        yield start, min(total, start + per_piece)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    if x.dtype == np.uint16 or x.dtype == np.uint32:
        x = x.astype(np.int64 if x.dtype == np.uint32 else np.int32)
    elif x.dtype == np.uint64:
        x = x.astype(np.float64)
    elif x.dtype == np.float16:
        x = x.astype(np.float32)
    return torch.from_numpy(x).to(device, non_blocking=False)


def clip_histograms(h: torch.Tensor, clim: int) -> torch.Tensor:
    """scikit-image's ``clip_histogram`` for every row of ``h`` (T, nbins) int64 at once."""
    T, nb = h.shape
    n_excess = (h - clim).clamp(min=0).sum(1)
    h = h.clamp(max=clim)
    bin_incr = torch.div(n_excess, nb, rounding_mode="floor")
    upper = (clim - bin_incr)[:, None]
    low = h < upper
    n_excess = n_excess - low.sum(1) * bin_incr
    h = h + low * bin_incr[:, None]
    mid = (h >= upper) & (h < clim)
    n_excess = n_excess - ((clim - h) * mid).sum(1)
    h = torch.where(mid, torch.full_like(h, clim), h)

    # The redistribution loop, per tile: position `index` in 0..nb-1 inside an outer pass that
    # stops when a whole pass redistributed nothing.
    active = torch.nonzero(n_excess > 0).flatten()
    if active.numel() == 0:
        return h
    pos = torch.arange(nb, device=h.device)
    index = torch.zeros(active.numel(), dtype=torch.int64, device=h.device)
    prev = n_excess[active].clone()
    ne = n_excess[active].clone()
    hs = h[active]
    while active.numel():
        under = hs < clim
        step = torch.clamp(torch.div(under.sum(1), ne, rounding_mode="floor"), min=1)
        offset = pos[None, :] - index[:, None]
        sel = under & (offset >= 0) & (torch.remainder(offset, step[:, None]) == 0)
        hs = hs + sel
        ne = ne - sel.sum(1)
        index = index + 1
        finished = (ne <= 0) | ((hs < clim).sum(1) == 0)  # no bin below the limit: nothing can change
        wrapped = (~finished) & (index == nb)
        stalled = wrapped & (prev == ne)
        prev = torch.where(wrapped, ne, prev)
        index = torch.where(wrapped, torch.zeros_like(index), index)
        done = finished | stalled
        if bool(done.any()):
            h[active[done]] = hs[done]
            keep = ~done
            active, hs, ne, prev, index = active[keep], hs[keep], ne[keep], prev[keep], index[keep]
    return h


def run(x, value_range, mins, maxs, kernel, nbins, clim, device, report):
    """Same contract as ``_numba.run``; ``device`` is a ``torch.device``. Returns a NumPy array."""
    device = torch.device(device)
    exact = device.type != "mps"
    fdt = torch.float64 if exact else torch.float32
    B, Z, Y, X = x.shape
    kz, ky, kx = kernel
    az, ay, ax = (_spec.axis_geometry(s, k) for s, k in zip((Z, Y, X), kernel))
    nz, ny, nx = az.n_tiles, ay.n_tiles, ax.n_tiles
    bs = _spec.bin_size(nbins)

    with torch.inference_mode():
        # 1. quantise, image by image (plane chunks)
        xt = _to_device(np.ascontiguousarray(x).reshape(B * Z, Y, X), device)
        mn_p = torch.as_tensor(np.repeat(mins, Z), dtype=fdt, device=device)[:, None, None]
        rng_p = torch.as_tensor(np.repeat(maxs - mins, Z), dtype=fdt, device=device)[:, None, None]
        bins = torch.empty((B * Z, Y, X), dtype=torch.int64, device=device)
        per_planes = max(1, _TARGET // (Y * X))
        for p0, p1 in _pieces(B * Z, per_planes):
            v = xt[p0:p1].to(fdt)
            r = rng_p[p0:p1]
            v = ((v - mn_p[p0:p1]) / torch.where(r > 0, r, torch.ones_like(r))).clamp(0.0, 1.0)
            q = torch.round(v * _spec.MAX_GRAY).to(torch.int64)
            q = torch.where(r > 0, q, torch.zeros_like(q))
            bins[p0:p1] = torch.div(q, bs, rounding_mode="floor")
            report(0.1 * p1 / (B * Z))
        del xt

        # 2. tile histograms: slab s = (b, tz) holds kz planes; key = (tile, bin)
        iy = torch.as_tensor(ay.hist_index, device=device)
        ix = torch.as_tensor(ax.hist_index, device=device)
        iz = torch.as_tensor(az.hist_index, device=device).view(nz, kz)
        n_slabs = B * nz
        nt = n_slabs * ny * nx
        hist = torch.zeros(nt * nbins, dtype=torch.int64, device=device)
        tile_of = (torch.arange(ny, device=device)[:, None, None, None] * nx
                   + torch.arange(nx, device=device)[None, None, :, None])  # (ny,1,nx,1)
        per_slabs = max(1, _TARGET // (kz * ny * ky * nx * kx))
        for s0, s1 in _pieces(n_slabs, per_slabs):
            s = torch.arange(s0, s1, device=device)
            planes = (s // nz)[:, None] * Z + iz[s % nz]  # (S, kz)
            block = bins[planes[:, :, None, None], iy[None, None, :, None], ix[None, None, None, :]]
            block = block.view(s1 - s0, kz, ny, ky, nx, kx)
            tile = (s[:, None, None, None, None, None] * (ny * nx)
                    + tile_of.view(1, 1, ny, 1, nx, 1))
            keys = (tile * nbins + block).flatten()
            hist += torch.bincount(keys, minlength=nt * nbins)
            report(0.1 + 0.2 * s1 / n_slabs)
        hist = clip_histograms(hist.view(nt, nbins), clim)
        ke = kz * ky * kx
        maps = torch.cumsum(hist, 1).to(fdt) * (_spec.MAX_GRAY / ke)
        maps = torch.trunc(maps.clamp(max=_spec.MAX_GRAY)).to(torch.float32).flatten()
        del hist
        report(0.35)

        # 3. interpolation (the spec's nested float32 form): z-blend of the maps per plane, then
        #    bilinear in (y, x), truncated to integer grey levels
        maps = maps.view(B, nz, ny * nx, nbins)
        plane_b = torch.arange(B * Z, device=device) // Z
        plane_z = torch.arange(B * Z, device=device) % Z
        t = lambda a, dt=torch.int64: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
        zlo, zhi = t(az.lo)[plane_z], t(az.hi)[plane_z]
        cz = t(az.frac, fdt)[plane_z].to(torch.float32)[:, None, None]
        wz0 = (1.0 - t(az.frac, fdt)[plane_z]).to(torch.float32)[:, None, None]
        f32 = lambda a: t(a, fdt).to(torch.float32)  # noqa: E731
        ylo, yhi = t(ay.lo)[:, None], t(ay.hi)[:, None]
        cy, wy0 = f32(ay.frac)[:, None], f32(1.0 - ay.frac)[:, None]
        xlo, xhi = t(ax.lo)[None, :], t(ax.hi)[None, :]
        cx, wx0 = f32(ax.frac)[None, :], f32(1.0 - ax.frac)[None, :]
        c00 = ((ylo * nx + xlo) * nbins)[None]  # (1, Y, X) offsets into one plane's maps
        c01 = ((ylo * nx + xhi) * nbins)[None]
        c10 = ((yhi * nx + xlo) * nbins)[None]
        c11 = ((yhi * nx + xhi) * nbins)[None]
        levels = torch.empty((B * Z, Y, X), dtype=torch.int64, device=device)
        for p0, p1 in _pieces(B * Z, per_planes):
            pm = wz0[p0:p1] * maps[plane_b[p0:p1], zlo[p0:p1]] + cz[p0:p1] * maps[plane_b[p0:p1], zhi[p0:p1]]
            pm = pm.reshape(p1 - p0, ny * nx * nbins)
            q = bins[p0:p1]

            def g(c, pm=pm, q=q, n=p1 - p0):
                return torch.gather(pm, 1, (c + q).view(n, Y * X)).view(n, Y, X)

            val = wy0 * (wx0 * g(c00) + cx * g(c01)) + cy * (wx0 * g(c10) + cx * g(c11))
            levels[p0:p1] = torch.trunc(val).to(torch.int64)
            report(0.35 + 0.55 * p1 / (B * Z))
        del bins

        # 4. per-image min-max rescale
        o = levels.view(B, Z * Y * X)
        omin = o.amin(1, keepdim=True).to(fdt)
        omax = o.amax(1, keepdim=True).to(fdt)
        d = omax - omin
        scaled = ((o.to(fdt) - omin) / torch.where(d > 0, d, torch.ones_like(d))).to(torch.float32)
        o = torch.where(d > 0, scaled, o.clamp(0, 1).to(torch.float32))
        result = o.view(B, Z, Y, X).cpu().numpy()
        report(1.0)
    return result
