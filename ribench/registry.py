"""Named, pluggable components (methods, suites, pretrains) resolved by name.

A registry maps a canonical name (and its aliases) to a target: either the object
itself or a lazy ``"package.module:attr"`` string imported on first use, so that
listing names never imports torch-heavy modules and resolving one name imports
only its own module. A registry given a ``base`` class checks each target against
it when the target is loaded, so a wrong plugin fails with one line naming it
instead of deep inside a run. Third-party packages add entries through the
``ribench.<kind>s`` entry-point group; a user's own file can be pulled in with
:func:`include`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, NamedTuple

from ribench.errors import RibenchError, UnknownNameError

__all__ = ["Registry", "RegistryEntry", "include"]


class RegistryEntry(NamedTuple):
    """What ``ribench list`` shows for one registered name."""

    name: str
    aliases: tuple[str, ...]
    description: str
    defaults: dict[str, Any]
    needs: tuple[str, ...] = ()


@dataclasses.dataclass
class _Slot:
    name: str
    target: Any  # the object, or a "module:attr" string until resolved
    aliases: tuple[str, ...]
    description: str
    defaults: dict[str, Any] | None
    resolved: bool
    needs: tuple[str, ...] = ()
    source: str | None = None  # the lazy "module:attr" spelling, kept for error messages
    checked: bool = False  # the target passed the base-class check


def _needs(needs: Iterable[str]) -> tuple[str, ...]:
    """Validated ``needs``: a string here is almost always a forgotten tuple comma."""
    if isinstance(needs, str):
        raise ValueError(f"needs must be a sequence of names, not the string {needs!r}")
    found = tuple(dict.fromkeys(needs))
    if any(not isinstance(n, str) or not n for n in found):
        raise ValueError(f"needs must hold non-empty strings, got {found!r}")
    return found


def _dotted_path(obj: Any) -> str | None:
    """The "module:qualname" spelling of an object, to compare it with a lazy target."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module is None or qualname is None:
        return None
    return f"{module}:{qualname}"


def _same_target(a: Any, b: Any) -> bool:
    """True when two targets denote the same thing, lazily spelled or not.

    Built-ins are often both decorated (object) and declared as entry points
    (string); that must not count as a conflict.
    """
    if a is b:
        return True
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, str):
        return _dotted_path(b) == a
    if isinstance(b, str):
        return _dotted_path(a) == b
    return False


def _import_target(spec: str) -> Any:
    """Import "package.module:attr" (attr may be dotted)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ImportError(f"target {spec!r} is not of the form 'package.module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    return obj


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _what(obj: Any) -> str:
    """A short, one-line account of what a wrongly registered target is."""
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    path = _dotted_path(obj)
    if path is not None and callable(obj):
        return f"the {type(obj).__name__} {path.replace(':', '.')}"
    return f"a value of type {type(obj).__name__}"


def _defaults_of(target: Any) -> dict[str, Any]:
    """Hyperparameter defaults a target advertises, for listing only."""
    defaults = getattr(target, "defaults", None)
    if callable(defaults):
        try:
            value = defaults()
        except TypeError:  # an instance method, not a classmethod: nothing to show
            value = None
        if isinstance(value, dict):
            return dict(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
    if dataclasses.is_dataclass(target) and isinstance(target, type):
        found = {}
        for field in dataclasses.fields(target):
            if field.default is not dataclasses.MISSING:
                found[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                found[field.name] = field.default_factory()
        return found
    return {}


class Registry:
    """Names → components of one kind ("method", "suite", "pretrain").

    ``base``: a class (or a lazy ``"module:attr"`` spelling of one, so that
    creating the registry imports nothing) that every target must subclass;
    checked when a target is loaded. None: targets are not checked.
    """

    def __init__(self, kind: str, base: type | str | None = None):
        self.kind = kind
        self._base = base
        self._slots: dict[str, _Slot] = {}
        self._alias_to_name: dict[str, str] = {}
        self._entry_points_loaded = False

    @property
    def entry_point_group(self) -> str:
        return f"ribench.{self.kind}s"

    # -- registration ---------------------------------------------------
    def register(
        self,
        name: str,
        target: Any = None,
        *,
        aliases: Iterable[str] = (),
        description: str = "",
        defaults: dict[str, Any] | None = None,
        needs: Iterable[str] = (),
    ) -> Any:
        """Register ``target`` under ``name``; without a target, return a decorator.

        ``description`` and ``defaults`` are for listing only; leave them out
        when the target carries its own (a method class), so there is one
        source. ``needs``: names of other components this one uses by default
        (a derived method's ingredient specs), readable by
        :meth:`declared_needs` without importing anything.

        Re-registering the same target is a no-op (modules get imported twice
        via entry points and decorators); a different target is a programming
        error and raises ValueError.
        """
        needs = _needs(needs)
        if target is None:

            def decorator(obj: Any) -> Any:
                self.register(name, obj, aliases=aliases, description=description, defaults=defaults,
                              needs=needs)
                return obj

            return decorator

        aliases = tuple(a for a in dict.fromkeys(aliases) if a != name)
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        existing = self._slots.get(name)
        if existing is not None:
            if not _same_target(existing.target, target):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered with a different target "
                    f"({existing.target!r}); cannot register {target!r}"
                )
            # Same component: prefer the resolved object and keep any extra metadata.
            if existing.resolved is False and not isinstance(target, str):
                existing.target, existing.resolved = target, True
            for alias in aliases:
                self._add_alias(alias, name)
            existing.aliases = tuple(dict.fromkeys(existing.aliases + aliases))
            existing.description = existing.description or description
            existing.defaults = existing.defaults if existing.defaults is not None else defaults
            existing.needs = existing.needs or needs
            return target

        if name in self._alias_to_name:
            raise ValueError(
                f"{self.kind} name {name!r} is already an alias of {self._alias_to_name[name]!r}"
            )
        for alias in aliases:
            self._check_alias_free(alias, name)
        self._slots[name] = _Slot(
            name=name,
            target=target,
            aliases=aliases,
            description=description,
            defaults=dict(defaults) if defaults is not None else None,
            resolved=not isinstance(target, str),
            needs=needs,
            source=target if isinstance(target, str) else None,
        )
        for alias in aliases:
            self._alias_to_name[alias] = name
        return target

    def _check_alias_free(self, alias: str, name: str) -> None:
        if alias in self._slots and alias != name:
            raise ValueError(f"alias {alias!r} for {self.kind} {name!r} is already a {self.kind} name")
        owner = self._alias_to_name.get(alias)
        if owner is not None and owner != name:
            raise ValueError(f"alias {alias!r} for {self.kind} {name!r} already points to {owner!r}")

    def _add_alias(self, alias: str, name: str) -> None:
        self._check_alias_free(alias, name)
        self._alias_to_name[alias] = name

    # -- plugins ----------------------------------------------------------
    def load_entry_points(self, group: str | None = None) -> None:
        """Register every installed entry point of ``group`` (lazily, not imported yet)."""
        group = group or self.entry_point_group
        for entry_point in importlib.metadata.entry_points(group=group):
            try:
                self.register(entry_point.name, entry_point.value)
            except ValueError:
                dist = getattr(getattr(entry_point, "dist", None), "name", None) or "an installed package"
                raise RibenchError(
                    f"entry point {entry_point.name!r} = {entry_point.value!r} in group {group!r} "
                    f"from {dist} clashes with an existing {self.kind} of that name"
                ) from None
        if group == self.entry_point_group:
            self._entry_points_loaded = True

    def _ensure_entry_points(self) -> None:
        if not self._entry_points_loaded:
            self._entry_points_loaded = True  # set first: a failing plugin must not retry forever
            self.load_entry_points(self.entry_point_group)

    def include(self, path: str | Path) -> ModuleType:
        """Import a user's Python file so its ``register`` decorators run."""
        return include(path)

    # -- lookup -----------------------------------------------------------
    def canonical_name(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases."""
        self._ensure_entry_points()
        if name in self._slots:
            return name
        if name in self._alias_to_name:
            return self._alias_to_name[name]
        known = sorted(set(self._slots) | set(self._alias_to_name))
        close = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{suggestion} (ribench list {self.kind}s shows all)"
        )

    def __contains__(self, name: object) -> bool:
        self._ensure_entry_points()
        return name in self._slots or name in self._alias_to_name

    def get(self, name: str) -> Any:
        """The component registered as ``name`` (imported now if it was lazy, then checked)."""
        slot = self._slots[self.canonical_name(name)]
        if not slot.resolved:
            try:
                obj = _import_target(slot.target)
            except Exception as error:  # any failure in a plugin's import is the user's to fix
                raise RibenchError(
                    f"cannot load {self.kind} {slot.name!r} from {slot.target!r}: "
                    f"{type(error).__name__}: {_one_line(error)}"
                ) from error
            slot.target, slot.resolved = obj, True
        if not slot.checked:
            self._check(slot)
            slot.checked = True
        return slot.target

    def _base_class(self) -> type | None:
        if isinstance(self._base, str):
            self._base = _import_target(self._base)  # ours, not a plugin's: let a typo surface as is
        return self._base

    def _check(self, slot: _Slot) -> None:
        """Refuse a target that is not a subclass of the registry's base, in one line."""
        base = self._base_class()
        if base is None or (isinstance(slot.target, type) and issubclass(slot.target, base)):
            return
        where = f" from {slot.source!r}" if slot.source else ""
        raise RibenchError(
            f"{self.kind} {slot.name!r}{where} is not a {base.__module__}.{base.__qualname__} subclass: "
            f"it is {_what(slot.target)}"
        )

    def names(self) -> list[str]:
        """Sorted canonical names."""
        self._ensure_entry_points()
        return sorted(self._slots)

    def entries(self) -> list[RegistryEntry]:
        """One entry per name, sorted; loads a target only for metadata it was not registered with
        (a method's description and defaults come from its class)."""
        result = []
        for name in self.names():
            slot = self._slots[name]
            description, defaults = slot.description, slot.defaults
            if not description or defaults is None:
                target = self.get(name)
                if not description:
                    description = getattr(target, "description", "") or ""
                    if not isinstance(description, str):
                        description = ""
                if defaults is None:
                    defaults = _defaults_of(target)
            result.append(RegistryEntry(name, slot.aliases, description, dict(defaults), slot.needs))
        return result

    def declared_needs(self) -> frozenset[str]:
        """Every name some entry declared in ``needs`` (plugins' entry points included); imports nothing.

        For methods: the ingredient specs whose cells derived methods read by default,
        so the runner knows which cells keep their weights without building every method.
        """
        self._ensure_entry_points()
        return frozenset(need for slot in self._slots.values() for need in slot.needs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._slots)} entries)"


def include(path: str | Path) -> ModuleType:
    """Import a Python file by path, once, under a module name unique to that path."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise RibenchError(f"cannot include {file}: no such file")
    resolved = file.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    module_name = f"ribench_include_{resolved.stem}_{digest}"
    if module_name in sys.modules:  # importing twice would re-register new class objects
        return sys.modules[module_name]
    for module in list(sys.modules.values()):  # already imported under its own name
        origin = getattr(module, "__file__", None)
        if origin and Path(origin).resolve() == resolved:
            return module
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise RibenchError(f"cannot include {file}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise RibenchError(f"cannot include {file}: {type(error).__name__}: {_one_line(error)}") from error
    return module
