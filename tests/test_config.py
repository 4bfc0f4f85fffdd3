import pytest

from bench.config import ConfigError, check_overrides, group_options
from bench.errors import BenchError
from bench.validate import validate


def test_default_config_composes_and_validates(make_cfg):
    cfg = make_cfg()
    validate(cfg)
    assert cfg.data.name == "fashion_mnist" and cfg.arch.name == "resnet18_mini"
    assert (cfg.bits.w, cfg.bits.a) == (4, 4)
    # the FP32 recipe follows the dataset
    assert make_cfg("data=synthetic").baseline.epochs == 3


def test_every_group_option_composes(make_cfg):
    for group in ("algo", "calib", "hw", "bits", "arch", "train", "debug"):
        for opt in group_options(group):
            cfg = make_cfg(f"{group}={opt}")
            aliases = {"ptq_bncalib": "ptq"}  # algo options that preset another algorithm's options
            if group != "debug":
                assert cfg[group].name == aliases.get(opt, opt) if "name" in cfg[group] else True


def test_hw_profiles_follow_table2(make_cfg):
    graphs = {"academic": 1, "tensorrt": 2, "acl": 1, "tvm": 3, "snpe": 3, "fbgemm": 3}
    for hw, graph in graphs.items():
        cfg = make_cfg(f"hw={hw}")
        assert cfg.hw.graph == graph
        assert cfg.hw.bn_fold == (-1 if hw == "academic" else 4)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("bits.w=9", "bits.w=9 out of range"),
        ("bits.a=1", "bits.a=1 out of range"),
        ("baseline.epochs=-1", "baseline.epochs=-1"),
        ("train.lr=0", "train.lr=0"),
        ("data.root=/definitely/not/here", "data.root='/definitely/not/here'"),
        ("calib.act=foo", "unknown calib.act 'foo'"),
        ("quant.graph=4", "quant.graph=4"),
        ("quant.bn_fold=5", "quant.bn_fold=5"),
        ("ptq.bias_correction=magic", "unknown ptq.bias_correction"),
        ("arch.name=nope", "unknown arch 'nope'"),
        ("+arch.lrr=1", "unknown config key arch.lrr"),
        ("arch.checkpoint=/nope.pt", "does not exist"),
        ("dist.device=tpu", "unknown dist.device 'tpu'; accepted: auto, cpu, cuda"),
        ("dist.backend=mpi", "unknown dist.backend 'mpi'; accepted: auto, gloo, nccl"),
    ],
)
def test_bad_values_one_line(make_cfg, override, needle):
    cfg = make_cfg(override)
    with pytest.raises(BenchError) as e:
        validate(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_check_overrides_unknown_group_option():
    with pytest.raises(ConfigError) as e:
        check_overrides(["arch=resnet19_mini"])
    assert str(e.value).startswith("unknown arch 'resnet19_mini'; accepted: ")
    assert "resnet18_mini" in str(e.value)
    with pytest.raises(ConfigError):
        check_overrides(["hw=tvm,foo"])  # sweeps are checked value by value
    check_overrides(["hw=tvm,snpe", "arch.lr=0.1", "seed=3"])
    with pytest.raises(ConfigError) as e:  # an appended option of a nested group (the PTQ method bundles)
        check_overrides(["+experiment/ptq_method=cle,bogus"])
    assert str(e.value).startswith("unknown experiment/ptq_method 'bogus'; accepted: ")
    assert "cle_analytic_bias_correction" in str(e.value)
    check_overrides(["+experiment/ptq_method=rtn_mse_folded", "+train.extra=1", "++seed=2"])
