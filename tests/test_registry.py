import pytest

from bench.errors import BenchError
from bench.registry import Registry, RegistryError


def test_register_get_names():
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and "b" in reg and len(reg) == 2


def test_unknown_name_is_one_line_listing_accepted():
    reg: Registry[int] = Registry("arch")
    reg.register("x")(1)
    with pytest.raises(RegistryError) as e:
        reg.get("y")
    msg = str(e.value)
    assert msg == "unknown arch 'y'; accepted: x"
    assert isinstance(e.value, BenchError) and "\n" not in msg


def test_duplicate_rejected():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError):
        reg.register("a")(2)
