"""``algo.params``: one typed dataclass per algorithm, built from the config and validated once (unknown keys, wrong
types and bad values are one-line errors); every algorithm's YAML composes into its parameters."""

from __future__ import annotations

import pytest

from bench.algos import ALGOS
from bench.algos.base import AlgoParams
from bench.errors import BenchError


@pytest.mark.parametrize("name", ALGOS.names())
def test_every_algorithm_yaml_gives_its_typed_parameters(make_cfg, name):
    algo = ALGOS.get(name)
    params = algo.params(make_cfg(f"algo={name}"))
    assert isinstance(params, algo.params_type) and issubclass(algo.params_type, AlgoParams)
    assert params == algo.params_type()  # the YAML states the defaults
    with pytest.raises(BenchError, match=rf"^unknown algo.params.nope for algo={name}; accepted: "):
        algo.params(make_cfg(f"algo={name}", "+algo.params.nope=1"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["algo=bitsplit", "algo.params.iters=0"], "algo.params.iters=0 must be >= 1"),
    (["algo=bitsplit", "algo.params.iters=two"], "algo.params.iters='two' must be an integer"),
    (["algo=bitsplit", "algo.params.ecaq=1"], "algo.params.ecaq=1 must be true or false"),
    (["algo=qdrop", "algo.params.drop_prob=1.0"], r"algo.params.drop_prob=1.0 must be in \[0, 1\)"),
    (["algo=qdrop", "algo.params.mask_rng=philox"], "unknown algo.params.mask_rng 'philox'; accepted: torch, splitmix"),
    (["algo=dsq", "algo.params.alpha=1.5"], "algo.params.alpha=1.5 out of range; accepted: 0 < alpha < 1"),
    (["algo=lsq", "algo.params.kernel=cuda"], "unknown algo.params.kernel 'cuda'; accepted: paper, torch"),
    (["algo=pact", "algo.params.qparam_weight_decay=-1"], "algo.params.qparam_weight_decay=-1.0 must be >= 0"),
    (["algo=ioso", "hw=tensorrt", "algo.params.group_values=[]"], "must be a non-empty list of positive factors"),
])
def test_bad_parameters_fail_in_one_line_before_work(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    algo = ALGOS.get(cfg.algo.name)
    with pytest.raises(BenchError, match=message) as e:
        algo.check(cfg)
    assert "\n" not in str(e.value)


def test_values_are_typed_once():
    from bench.algos.ptq_recon import IOSOParams, QDropParams

    assert QDropParams.from_mapping({"drop_prob": 0}, "qdrop").drop_prob == 0.0  # an int is a number
    assert isinstance(QDropParams.from_mapping({"drop_prob": 0}, "qdrop").drop_prob, float)
    p = IOSOParams.from_mapping({"group_values": [1, 0.5]}, "ioso")
    assert p.group_values == (1.0, 0.5) and p.as_dict()["group_values"] == [1.0, 0.5]
    with pytest.raises(BenchError, match="must be a number"):
        QDropParams.from_mapping({"drop_prob": True}, "qdrop")
