import dataclasses
import importlib.metadata
import json
import sys

import pytest

from ribench.errors import RibenchError, UnknownNameError
from ribench.registry import Registry, include


@pytest.fixture(autouse=True)
def no_installed_plugins(monkeypatch):
    """Tests must not depend on whatever entry points this environment has."""
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [])


def test_decorator_registers_class_with_aliases_and_returns_it():
    reg = Registry("method")

    @reg.register("ft", aliases=["finetune", "full"], description="full fine-tuning")
    class FullFineTune:
        pass

    assert FullFineTune.__name__ == "FullFineTune"  # the decorator hands the class back
    assert reg.get("ft") is FullFineTune
    assert reg.get("finetune") is FullFineTune
    assert reg.get("full") is FullFineTune
    assert "finetune" in reg
    assert reg.canonical_name("full") == "ft"
    assert reg.names() == ["ft"]
    (entry,) = reg.entries()
    assert entry.name == "ft" and entry.aliases == ("finetune", "full")
    assert entry.description == "full fine-tuning"


def test_reregistering_same_target_is_fine_but_a_different_one_is_an_error():
    reg = Registry("method")
    reg.register("a", json.dumps)
    reg.register("a", json.dumps)  # e.g. a module imported twice
    reg.register("a", "json:dumps")  # the same object spelled lazily (entry point)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", json.loads)
    with pytest.raises(ValueError, match="alias"):
        reg.register("b", json.loads, aliases=["a"])
    reg.register("c", json.loads, aliases=["cc"])
    with pytest.raises(ValueError, match="already points to 'c'"):
        reg.register("d", json.load, aliases=["cc"])
    with pytest.raises(ValueError, match="already an alias"):
        reg.register("cc", json.load)


def test_lazy_string_target_is_imported_on_first_get_and_cached(tmp_path, monkeypatch):
    module_file = tmp_path / "ribench_lazy_probe.py"
    module_file.write_text("LOADS = []\nLOADS.append(1)\nclass Thing:\n    description = 'from the class'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method")
    reg.register("thing", "ribench_lazy_probe:Thing")
    assert "ribench_lazy_probe" not in sys.modules  # listing names must not import
    assert reg.names() == ["thing"]
    assert "ribench_lazy_probe" not in sys.modules
    thing = reg.get("thing")
    assert thing.__name__ == "Thing"
    assert reg.get("thing") is thing
    assert sys.modules["ribench_lazy_probe"].LOADS == [1]
    assert reg.entries()[0].description == "from the class"
    sys.modules.pop("ribench_lazy_probe", None)


def test_lazy_stdlib_target():
    reg = Registry("method")
    reg.register("dumps", "json:dumps")
    assert reg.get("dumps") is json.dumps


def test_failing_lazy_import_names_the_target():
    reg = Registry("method")
    reg.register("ghost", "ribench_no_such_module_xyz:Ghost")
    reg.register("noattr", "json:no_such_attr")
    with pytest.raises(RibenchError) as info:
        reg.get("ghost")
    message = str(info.value)
    assert "'ribench_no_such_module_xyz:Ghost'" in message and "No module named" in message
    assert "\n" not in message
    with pytest.raises(RibenchError, match="no attribute 'no_such_attr'"):
        reg.get("noattr")


def test_unknown_name_suggests_closest_name_or_alias():
    reg = Registry("method")
    reg.register("saft", json.dumps)
    reg.register("l2sp", json.loads, aliases=["l2-sp"])
    with pytest.raises(UnknownNameError) as info:
        reg.get("saftt")
    assert str(info.value) == "unknown method 'saftt'; did you mean 'saft'? (ribench list methods shows all)"
    with pytest.raises(UnknownNameError, match="did you mean 'l2-sp'"):
        reg.get("l2-spp")
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzzzzzzz")
    assert str(info.value) == "unknown method 'zzzzzzzz' (ribench list methods shows all)"


def test_entry_points_are_loaded_lazily_once(monkeypatch):
    calls = []

    def fake_entry_points(group=None):
        calls.append(group)
        return [
            importlib.metadata.EntryPoint(name="dumps", value="json:dumps", group=group),
            importlib.metadata.EntryPoint(name="loads", value="json:loads", group=group),
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry("method")
    reg.register("loads", json.loads)  # a built-in also declared as an entry point: not a clash
    assert reg.names() == ["dumps", "loads"]
    assert reg.get("dumps") is json.dumps
    assert reg.get("loads") is json.loads
    assert calls == ["ribench.methods"]


def test_clashing_entry_point_is_a_user_facing_error(monkeypatch):
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group=None: [importlib.metadata.EntryPoint(name="ft", value="json:loads", group=group)],
    )
    reg = Registry("method")
    reg.register("ft", json.dumps)
    with pytest.raises(RibenchError, match="entry point 'ft'.*clashes"):
        reg.names()


def test_entries_use_stored_metadata_then_the_target():
    reg = Registry("method")

    @dataclasses.dataclass
    class Hyper:
        lam: float = 0.1
        layers: list = dataclasses.field(default_factory=lambda: [1, 2])

    class WithDefaults:
        description = "class description"

        @classmethod
        def defaults(cls):
            return {"alpha": 0.5}

    reg.register("hyper", Hyper)
    reg.register("withdefaults", WithDefaults)
    reg.register("stored", WithDefaults, description="stored description", defaults={"alpha": 1.0})
    entries = {entry.name: entry for entry in reg.entries()}
    assert entries["hyper"].defaults == {"lam": 0.1, "layers": [1, 2]}
    assert entries["hyper"].description == ""
    assert entries["withdefaults"].description == "class description"
    assert entries["withdefaults"].defaults == {"alpha": 0.5}
    assert entries["stored"].description == "stored description"
    assert entries["stored"].defaults == {"alpha": 1.0}


def test_include_runs_register_decorators(tmp_path):
    reg = Registry("method")
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "import dataclasses\n"
        "from tests_registry_target import REG\n"
        "@REG.register('mine', aliases=['my'])\n"
        "@dataclasses.dataclass\n"
        "class Mine:\n"
        "    lam: float = 2.0\n"
    )
    sys.modules["tests_registry_target"] = type(sys)("tests_registry_target")
    sys.modules["tests_registry_target"].REG = reg
    try:
        module = reg.include(plugin)
        assert reg.get("my") is module.Mine
        assert include(plugin) is module  # twice: no re-execution, no clash
        assert reg.entries()[0].defaults == {"lam": 2.0}
    finally:
        del sys.modules["tests_registry_target"]


def test_include_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(RibenchError, match=f"cannot include {missing}: no such file"):
        include(missing)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(RibenchError) as info:
        include(broken)
    assert str(info.value) == f"cannot include {broken}: RuntimeError: boom second line"
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def (:\n")
    with pytest.raises(RibenchError, match="SyntaxError"):
        include(syntax)
