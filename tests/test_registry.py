import dataclasses
import importlib.metadata
import json
import subprocess
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


# -- the base-class check: a wrong target fails when loaded, in one line naming it ----------------
class Base:
    pass


class Derived(Base):
    pass


def not_a_class():
    pass


def test_a_target_that_is_not_a_subclass_of_the_base_is_refused_when_loaded(tmp_path, monkeypatch):
    module_file = tmp_path / "ribench_base_probe.py"
    module_file.write_text("def build():\n    pass\nclass Other:\n    pass\nVALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", base=Base)
    reg.register("fine", Derived)
    reg.register("func", "ribench_base_probe:build")
    reg.register("cls", "ribench_base_probe:Other")
    reg.register("value", "ribench_base_probe:VALUE")
    reg.register("direct", not_a_class)          # registered as an object: checked on get just the same
    assert "ribench_base_probe" not in sys.modules   # registering and listing import nothing
    assert reg.names() == ["cls", "direct", "fine", "func", "value"]
    assert "ribench_base_probe" not in sys.modules
    assert reg.get("fine") is Derived
    expected = {
        "func": "method 'func' from 'ribench_base_probe:build' is not a test_registry.Base subclass: "
                "it is the function ribench_base_probe.build",
        "cls": "method 'cls' from 'ribench_base_probe:Other' is not a test_registry.Base subclass: "
               "it is the class ribench_base_probe.Other",
        "value": "method 'value' from 'ribench_base_probe:VALUE' is not a test_registry.Base subclass: "
                 "it is a value of type int",
        "direct": "method 'direct' is not a test_registry.Base subclass: it is the function test_registry.not_a_class",
    }
    for name, message in expected.items():
        for _ in range(2):                       # refused every time, not only the first
            with pytest.raises(RibenchError) as info:
                reg.get(name)
            assert str(info.value) == message
    sys.modules.pop("ribench_base_probe", None)


def test_a_lazy_base_is_imported_only_when_a_target_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "ribench_lazy_base.py").write_text("class Base:\n    pass\nclass Child(Base):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", base="ribench_lazy_base:Base")
    reg.register("child", "ribench_lazy_base:Child")
    reg.register("plain", "json:dumps")
    assert reg.names() == ["child", "plain"] and "ribench_lazy_base" not in sys.modules
    assert reg.get("child").__name__ == "Child"
    with pytest.raises(RibenchError, match="'plain' from 'json:dumps' is not a ribench_lazy_base.Base subclass"):
        reg.get("plain")
    sys.modules.pop("ribench_lazy_base", None)


def test_without_a_base_any_target_is_accepted():
    reg = Registry("suite")
    reg.register("fn", "json:dumps")
    assert reg.get("fn") is json.dumps


def test_the_method_registry_refuses_a_plugin_that_is_not_a_method(tmp_path):
    from ribench.catalog import METHODS

    plugin = tmp_path / "not_a_method.py"
    plugin.write_text("from ribench.catalog import METHODS\n"
                      "@METHODS.register('not-a-method-xyz')\n"
                      "def build():\n"
                      "    return None\n")
    METHODS.include(plugin)
    try:
        with pytest.raises(RibenchError) as info:
            METHODS.get("not-a-method-xyz")
        message = str(info.value)
        assert message.startswith("method 'not-a-method-xyz' is not a ribench.engine.method.Method subclass: "
                                  "it is the function ribench_include_not_a_method_")
        assert "\n" not in message
    finally:
        METHODS._slots.pop("not-a-method-xyz", None)


# -- needs: what an entry uses by default, declared without importing anything -------------------
def test_declared_needs_are_read_without_importing_any_target(tmp_path, monkeypatch):
    (tmp_path / "ribench_needs_probe.py").write_text("class Mixed:\n    description = 'mixes'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method")
    reg.register("mixed", "ribench_needs_probe:Mixed", needs=("a", "b[x=1]"))
    reg.register("other", "ribench_needs_probe:Mixed", needs=["a"])
    reg.register("plain", "json:dumps")
    assert reg.declared_needs() == frozenset({"a", "b[x=1]"})
    assert "ribench_needs_probe" not in sys.modules
    entries = {entry.name: entry for entry in reg.entries()}
    assert entries["mixed"].needs == ("a", "b[x=1]") and entries["plain"].needs == ()
    sys.modules.pop("ribench_needs_probe", None)


def test_declared_needs_include_plugins_registered_by_decorator():
    reg = Registry("method")

    @reg.register("derived", needs=["base"])
    class Derived:
        pass

    assert reg.declared_needs() == {"base"}
    assert reg.entries()[0].needs == ("base",)


def test_needs_must_be_a_sequence_of_names():
    reg = Registry("method")
    with pytest.raises(ValueError, match="not the string 'ft'"):
        reg.register("w", json.dumps, needs="ft")
    with pytest.raises(ValueError, match="non-empty strings"):
        reg.register("w", json.dumps, needs=["ft", ""])



# -- the built-in catalog: using one method imports that method's module only --------------------
LAZY_PROBE = """
import importlib.metadata, json, sys
importlib.metadata.entry_points = lambda **select: importlib.metadata.EntryPoints([])   # no installed plugins
def loaded():
    return sorted(m for m in sys.modules if m.startswith("ribench.methods."))
from ribench.catalog import METHODS
after = {"import": loaded()}
METHODS.names(); "ft" in METHODS; METHODS.canonical_name("wise-ft"); METHODS.declared_needs()
after["names"] = loaded()
METHODS.get("surprise")
after["surprise"] = loaded()
METHODS.get("wiseft")
after["wiseft"] = loaded()
print(json.dumps(after))
"""


def test_listing_names_and_resolving_one_method_import_no_other_method_module():
    out = subprocess.run([sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["import"] == [] and loaded["names"] == []
    # surprise's own module and the shared (underscored) layerwise helpers; no other method
    assert loaded["surprise"] == ["ribench.methods._layerwise", "ribench.methods.surprise"]
    assert loaded["wiseft"] == ["ribench.methods._layerwise", "ribench.methods.surprise", "ribench.methods.wiseft"]
