"""What every registered method promises, checked for each one (timm's registry-wide tests).

A method's identity in the store is its name, its Config and the protocol, so a method
must be named as registered, build from defaults alone, and read back the settings its
label and `--set` write. No training here: each check builds classes and configs only.
"""

import ast
import dataclasses
import pkgutil
import typing
from pathlib import Path

import pytest

import ribench.methods
from ribench.catalog import METHODS
from ribench.engine.recipe import GRID_SIZE, Recipe
from ribench.engine.compose import method_class
from ribench.engine.method import Method
from ribench.engine.settings import parse_spec
from ribench.run.labels import method_label

NAMES = METHODS.names()


@pytest.fixture(scope="module")
def entries():
    return {entry.name: entry for entry in METHODS.entries()}


def _changed(value, kind):
    """A different value of the field's type, one that survives being written into a label."""
    if typing.get_origin(kind) is typing.Literal:
        return next(choice for choice in typing.get_args(kind) if choice != value)
    if kind is bool:
        return not value
    if kind is int:
        return value + 1
    if kind is float:
        return value + 0.25
    if kind is str:
        return "ft" if value != "ft" else "lp"
    raise AssertionError(f"no rule to change a {kind} setting; extend _changed")


@pytest.mark.parametrize("name", NAMES)
def test_is_a_method_named_as_registered(name):
    cls = METHODS.get(name)
    assert isinstance(cls, type) and issubclass(cls, Method)
    assert cls.name == name                       # the stored cells' identity is this name


@pytest.mark.parametrize("name", NAMES)
def test_describes_itself_and_cites_its_paper(name, entries):
    cls = METHODS.get(name)
    assert isinstance(cls.description, str) and cls.description.strip()
    assert isinstance(cls.paper, str) and cls.paper.strip()
    assert entries[name].description == cls.description   # what `ribench list methods` shows


@pytest.mark.parametrize("name", NAMES)
def test_config_is_a_dataclass_whose_every_field_has_a_default(name):
    config = METHODS.get(name).Config
    assert dataclasses.is_dataclass(config)
    for field in dataclasses.fields(config):
        assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING, \
            f"{name}: setting '{field.name}' has no default"


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_its_defaults(name):
    cls = METHODS.get(name)
    assert cls().config == cls.Config()
    assert cls(cls.Config()).config == cls.Config()
    assert cls.defaults() == cls.settings(cls.Config())
    assert cls.setting_names() == set(cls.defaults())


@pytest.mark.parametrize("name", NAMES)
def test_round_trips_through_set(name):
    cls = METHODS.get(name)
    assert cls.configure({k: str(v) for k, v in cls.defaults().items()}) == cls.Config()


@pytest.mark.parametrize("name", NAMES)
def test_round_trips_through_its_label(name):
    cls = METHODS.get(name)
    assert method_label(cls, cls.Config()) == name
    hints = typing.get_type_hints(cls.Config)
    defaults = cls.Config()
    changes = {f.name: _changed(getattr(defaults, f.name), hints[f.name]) for f in dataclasses.fields(cls.Config)}
    for chosen in [{key: value} for key, value in changes.items()] + ([changes] if len(changes) > 1 else []):
        config = dataclasses.replace(defaults, **chosen)
        label = method_label(cls, config)
        parsed_name, overrides = parse_spec(label)
        assert method_class(parsed_name) is cls
        assert cls.configure(overrides) == config, label


@pytest.mark.parametrize("name", NAMES)
def test_default_ingredients_are_declared_in_the_catalog(name, entries):
    """The runner reads `needs` instead of building every method; they must agree."""
    ingredients = [spec for spec in METHODS.get(name)().ingredients() if spec != "pretrained"]
    assert sorted(ingredients) == sorted(entries[name].needs)


def test_declared_needs_are_every_default_ingredient():
    expected = {spec for name in NAMES for spec in METHODS.get(name)().ingredients() if spec != "pretrained"}
    assert METHODS.declared_needs() == expected == {"ft", "ewc", "lwf", "lp[fit=lbfgs]"}


def _method_modules():
    return sorted(m.name for m in pkgutil.iter_modules(ribench.methods.__path__))


def test_every_method_module_is_registered_and_no_underscored_one_is():
    targets = {METHODS.get(name).__module__ for name in NAMES}
    public = {f"ribench.methods.{m}" for m in _method_modules() if not m.startswith("_")}
    assert targets == public
    assert not any(t.rsplit(".", 1)[1].startswith("_") for t in targets)


# criticality's `partial_epochs` fine-tunes a copy with ft first (the paper's Algorithm 4).
USES_ANOTHER_METHOD = {"criticality": {"ft"}}


def test_a_method_module_imports_no_other_method_module_only_shared_ones():
    for module in _method_modules():
        tree = ast.parse((Path(ribench.methods.__path__[0]) / f"{module}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ribench.methods."):
                imported.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[2] for a in node.names if a.name.startswith("ribench.methods.")}
        others = {m for m in imported if not m.startswith("_")}
        assert others <= USES_ANOTHER_METHOD.get(module, set()), f"{module} imports {sorted(others)}"


@pytest.mark.parametrize("name", NAMES)
def test_declares_its_papers_recipe_or_trains_nothing(name):
    """The tuned protocol trains every method under its own recipe; one without it could not run there."""
    cls = METHODS.get(name)
    if cls.tunes_nothing:
        assert cls.recipe is None
        return
    recipe = cls.recipe
    assert isinstance(recipe, Recipe) and recipe.source, f"{name} declares no cited recipe"
    assert len(recipe.grid()) == GRID_SIZE and recipe.lr > 0
    if recipe.tune != "lr":                       # a strength: a Config field, trained at another's lr
        assert recipe.tune in cls.setting_names() and recipe.lr_from in METHODS.names()
