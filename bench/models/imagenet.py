"""The five ImageNet architectures of the MQBench benchmark, built by timm: random weights, or timm's published
ImageNet weights (``arch.pretrained=true``; MQBench fine-tunes every algorithm from the same pre-trained model)."""

from __future__ import annotations

import os
from pathlib import Path

import timm
from torch import nn

from bench.errors import BenchError
from bench.models.base import ARCH_INFO, register_arch
from bench.models.normalize import normalize_model

# bench name -> (timm name, family)
IMAGENET_ARCHS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18", "resnet"),
    "resnet50": ("resnet50", "resnet"),
    "mobilenetv2": ("mobilenetv2_100", "mobile"),
    "efficientnet_lite0": ("efficientnet_lite0", "mobile"),
    "regnetx_600mf": ("regnetx_006", "regnet"),
}
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's Hugging Face repositories hold


class PretrainedError(BenchError):
    """Published weights that cannot be found (no local file, not cached, no network)."""


def _timm_factory(timm_name: str):
    def factory(num_classes: int, in_chans: int) -> nn.Module:
        # random weights: the published ones come through build_pretrained (arch.pretrained=true)
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    factory.__name__ = f"build_{timm_name}"
    factory.__doc__ = f"timm ``{timm_name}`` with random weights (``pretrained=False``)."
    return factory


for _name, (_timm_name, _family) in IMAGENET_ARCHS.items():
    register_arch(_name, family=_family, track="imagenet", timm_name=_timm_name)(_timm_factory(_timm_name))


def hub_id(name: str) -> str:
    """The Hugging Face repository of timm's default pretrained weights of arch ``name`` (``timm/resnet18.a1_in1k``)."""
    cfg = timm.models.get_pretrained_cfg(ARCH_INFO[name]["timm_name"])
    if cfg is None or not cfg.hf_hub_id:
        raise PretrainedError(f"timm has no published weights for arch={name}")
    return str(cfg.hf_hub_id)


def resolve_pretrained_file(name: str, local_file: str | None = None) -> Path:
    """The file holding timm's published weights of arch ``name``: ``local_file`` (``arch.pretrained_file``), else the
    Hugging Face cache, else a download into it where a network exists. Not found: a one-line error saying where to
    put the weights."""
    if local_file:
        path = Path(local_file).expanduser()
        if not path.is_file():
            raise PretrainedError(f"arch.pretrained_file={local_file!r} does not exist")
        return path
    repo = hub_id(name)
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for fname in HUB_FILES:
        cached = try_to_load_from_cache(repo_id=repo, filename=fname)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    if not os.environ.get("HF_HUB_OFFLINE"):
        for fname in HUB_FILES:
            try:
                return Path(hf_hub_download(repo_id=repo, filename=fname, etag_timeout=10))
            except Exception:  # no network, or the repository has the other file name
                continue
    raise PretrainedError(
        f"no published weights for arch={name}: https://huggingface.co/{repo} is not in the Hugging Face cache "
        f"and cannot be downloaded here; download {HUB_FILES[0]} from there and pass arch.pretrained_file=PATH")


def build_pretrained(name: str, path: str | Path, num_classes: int, in_chans: int) -> nn.Module:
    """timm's arch ``name`` with the published weights in ``path`` (a state dict: ``.safetensors``, ``.pth``,
    ``.bin``), normalised for fx; timm adapts the classifier / first conv when ``num_classes`` / ``in_chans`` differ
    from ImageNet's. A file that does not fit the arch is a one-line error."""
    timm_name = ARCH_INFO[name]["timm_name"]
    try:
        # timm loads published weights leniently (it adapts classifier and stem): check the file's keys first
        from timm.models import load_state_dict

        keys = set(load_state_dict(str(path)))
        want = set(timm.create_model(timm_name, pretrained=False).state_dict())
        if keys != want:
            missing, extra = sorted(want - keys), sorted(keys - want)
            what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
            raise ValueError(f"{len(missing)} missing and {len(extra)} unexpected keys ({what})")
        model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  num_classes=num_classes, in_chans=in_chans)
    except Exception as e:  # key mismatch, safetensors / pickle errors, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise PretrainedError(
            f"arch.pretrained_file {str(path)!r} does not hold {timm_name} weights: {first}") from None
    return normalize_model(model)
