"""Network builders shared by inference and training (MONAI; imported lazily by callers)."""

from __future__ import annotations

from ..errors import MedaiError

ARCHS = ("unet2d", "unet3d", "vnet", "basicunetplusplus", "segresnet", "dynunet")
ARCH_DIMS = {"cascade2d": 2, "unet2d": 2, "unet3d": 3, "vnet": 3, "basicunetplusplus": 3, "segresnet": 3, "dynunet": 3}


def default_arch_params(arch: str, in_channels: int = 1, out_channels: int = 3) -> dict:
    """Small default hyper-parameters for ``arch``, so a card needs only the architecture name."""
    if arch not in ARCHS:
        raise MedaiError(f"unknown architecture '{arch}'; use one of: {', '.join(ARCHS)}")
    base = {"arch": arch, "in_channels": in_channels, "out_channels": out_channels}
    if arch == "unet2d":
        base.update(channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2], num_res_units=2)
    elif arch == "unet3d":
        base.update(channels=[16, 32, 64, 128], strides=[2, 2, 2], num_res_units=2)
    elif arch == "basicunetplusplus":
        base.update(features=[16, 16, 32, 64, 128, 16])
    elif arch == "segresnet":
        base.update(init_filters=8)
    elif arch == "dynunet":
        base.update(kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2], upsample_kernel_size=[2, 2, 2])
    return base


def _cascade(arch_params: dict):
    """Two 2-D networks: ``organ`` (background / liver / tumour, used for the liver+tumour region) and
    ``tumour`` (used inside the organ for tumour vs liver). Returns log-probabilities of 3 classes:
    p(bg) = p_organ(bg), p(liver) = (1 - p(bg)) * q(liver), p(tumour) = (1 - p(bg)) * q(tumour), with
    q the tumour network's liver/tumour split; the region rule then reads organ and tumour off them."""
    import torch

    organ = build_network(arch_params["organ"])
    tumour = build_network(arch_params["tumour"])
    union = arch_params.get("region", "organ") == "union"  # organ region = either network's foreground

    class Cascade(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.organ, self.tumour = organ, tumour

        def forward(self, x):
            po = torch.softmax(self.organ(x).float(), 1)
            pt = torch.softmax(self.tumour(x).float(), 1)
            fg = 1.0 - po[:, :1]
            if union:
                fg = torch.maximum(fg, 1.0 - pt[:, :1])
            split = pt[:, 1:] / (pt[:, 1:].sum(1, keepdim=True) + 1e-6)
            return torch.log(torch.cat([1.0 - fg, fg * split], 1) + 1e-6)

    return Cascade()


def build_network(arch_params: dict):
    """A torch module from a card's ``arch_params`` (``arch`` + the MONAI constructor's arguments)."""
    import torch
    from monai.networks import nets

    params = dict(arch_params)
    arch = params.pop("arch", "unet2d")
    if arch == "cascade2d":
        return _cascade(params)
    if arch not in ARCHS:
        raise MedaiError(f"model card names architecture '{arch}'; supported: {', '.join(ARCHS)}")
    dims = ARCH_DIMS[arch]
    params.pop("spatial_dims", None)
    try:
        if arch in ("unet2d", "unet3d"):
            net = nets.UNet(spatial_dims=dims, **params)
        elif arch == "vnet":
            net = nets.VNet(spatial_dims=dims, **params)
        elif arch == "basicunetplusplus":
            inner = nets.BasicUNetPlusPlus(spatial_dims=dims, **params)

            class First(torch.nn.Module):
                def __init__(self, m):
                    super().__init__()
                    self.m = m

                def forward(self, x):
                    out = self.m(x)
                    return out[0] if isinstance(out, (list, tuple)) else out

            net = First(inner)
        elif arch == "segresnet":
            net = nets.SegResNet(spatial_dims=dims, **params)
        else:
            net = nets.DynUNet(spatial_dims=dims, **params)
    except TypeError as exc:
        raise MedaiError(f"bad arch_params for {arch}: {exc}") from None
    return net
