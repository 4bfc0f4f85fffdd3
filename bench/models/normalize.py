"""Module-level normalisation so that ``torch.fx`` sees plain ``Conv2d -> BatchNorm2d`` call_module pairs.

timm fuses BatchNorm and activation into ``BatchNormAct2d`` (a ``BatchNorm2d`` subclass whose forward calls
``F.batch_norm`` itself). fx does not treat it as a leaf, so the traced graph shows a functional
``batch_norm`` call and BN-folding passes cannot find the BN. :func:`normalize_model` swaps every such
module for a plain ``nn.BatchNorm2d`` (sharing the same parameters and buffers) followed by its drop and
activation modules, and turns in-place activations off.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from bench.errors import BenchError


class NormalizeError(BenchError):
    """A module could not be normalised (an unsupported fused norm layer)."""


def _plain_bn(old: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """A plain BatchNorm2d with ``old``'s hyper-parameters that shares its parameters and buffers."""
    bn = nn.BatchNorm2d(
        old.num_features,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
    )
    # Share (not copy) the tensors: optimiser state and outside references stay valid.
    bn.weight = old.weight
    bn.bias = old.bias
    bn.running_mean = old.running_mean
    bn.running_var = old.running_var
    bn.num_batches_tracked = old.num_batches_tracked
    bn.train(old.training)
    return bn


def split_norm_act(module: nn.BatchNorm2d) -> nn.Module:
    """Return the plain-module equivalent of a fused BatchNorm+drop+act module.

    The result is ``nn.BatchNorm2d`` alone when drop and act are identities, else
    ``nn.Sequential(OrderedDict(bn=..., drop=..., act=...))`` with identity parts left out.
    """
    bn = _plain_bn(module)
    parts: OrderedDict[str, nn.Module] = OrderedDict(bn=bn)
    for name in ("drop", "act"):
        sub = getattr(module, name, None)
        if sub is not None and not isinstance(sub, nn.Identity):
            parts[name] = sub
    return bn if len(parts) == 1 else nn.Sequential(parts)


def _is_fused_bn(module: nn.Module) -> bool:
    # Any BatchNorm2d subclass that is not torch's own (timm's BatchNormAct2d and friends).
    return isinstance(module, nn.BatchNorm2d) and type(module) is not nn.BatchNorm2d


def normalize_model(model: nn.Module) -> nn.Module:
    """Normalise ``model`` in place for fx tracing and return it.

    - fused BatchNorm+act modules become ``BatchNorm2d`` (+ drop) + act (see :func:`split_norm_act`);
    - activations with an ``inplace`` flag are made out-of-place, so forward hooks that keep a layer's
      output (calibration, reconstruction) do not see it overwritten by the next activation.

    Outputs are unchanged in train and eval mode. Raises :class:`NormalizeError` for fused norm layers
    other than BatchNorm (GroupNormAct and the like are not used by the benchmark archs).
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_fused_bn(child):
                setattr(parent, name, split_norm_act(child))
            elif type(child).__module__ == "timm.layers.norm_act":
                raise NormalizeError(f"cannot normalise {type(child).__name__} at {name!r}; only BatchNormAct2d")
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return model
