"""``python -m bench list [axis]``: what each grid axis offers."""

from __future__ import annotations

import argparse

from bench.config import CONF_DIR, GROUPS, group_options

AXES = ("algo", "hw", "arch", "data", "bits", "calib", "train", "baseline", "debug", "experiment")


def _yaml_comment(group: str, name: str) -> str:
    # first comment line of the YAML file: each option documents itself there
    for line in (CONF_DIR / group / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


def rows(axis: str) -> list[tuple[str, str]]:
    """(name, description) pairs of one axis."""
    if axis == "algo":
        from bench.algos import ALGOS
        from bench.quant.profiles import load_profile, profile_names

        out = []
        for name in sorted(ALGOS.names(), key=lambda n: (ALGOS.entry(n).order, n)):
            a = ALGOS.get(name)
            hw = [p for p in profile_names() if a.unsupported(load_profile(p)) is None] if a.quantizes else []
            where = f"; hw: {', '.join(hw)}" if hw and len(hw) < len(profile_names()) else ""
            label = ALGOS.entry(name).label
            desc = a.description if a.description.startswith(label) else f"{label}: {a.description}"
            out.append((name, f"[{a.kind}] {desc}{where}"))
        return out
    if axis == "hw":
        from omegaconf import OmegaConf

        out = []
        for name in group_options("hw"):
            c = OmegaConf.load(CONF_DIR / "hw" / f"{name}.yaml")
            out.append((name, f"{c.hardware}; graph {c.graph}, bn_fold {c.bn_fold}: {c.description}"))
        return out
    if axis == "arch":
        from bench.baselines import shipped_manifest
        from bench.models import ARCH_INFO

        shipped = {e["arch"]: e for e in shipped_manifest()["baselines"]}
        out = []
        for name in group_options("arch"):
            info = ARCH_INFO.get(name, {})
            track = info.get("track", "?")
            e = shipped.get(name)
            fp32 = f" (shipped FP32 on {e['data']}: top-1 {e['top1']:.2f}, sha256 {e['sha256'][:12]})" if e else ""
            out.append((name, f"[{track}, {info.get('input_size', '?')} px] {_yaml_comment('arch', name)}{fp32}"))
        return out
    return [(name, _yaml_comment(axis, name) or _flat(axis, name)) for name in group_options(axis)]


def _flat(group: str, name: str) -> str:
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
    return " ".join(f"{k}={v}" for k, v in c.items()) if isinstance(c, dict) else ""


def main(argv: list[str]) -> int:
    """Entry of the ``list`` verb."""
    p = argparse.ArgumentParser(prog="python -m bench list", description="Show the options of each grid axis.")
    p.add_argument("axis", nargs="?", choices=AXES, help="one axis (default: all)")
    args = p.parse_args(argv)
    for axis in [args.axis] if args.axis else AXES:
        assert axis in GROUPS
        print(f"{axis}:")
        items = rows(axis)
        if not items:
            print("  (none yet)")
        for name, desc in items:
            print(f"  {name:<24} {desc}")
    return 0
