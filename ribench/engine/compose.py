"""Method specs: names, `name[key=value,...]` settings and `base+regularizer` combinations.

`ft+lwf`, `flyp+l2sp`, `lpft+ewc+lwf`: a base method that trains through the loop
plus any number of regularizers, trained in one run. The combination is a
method class of its own whose settings are namespaced by part (`lwf.alpha`;
a bare `alpha` works while it is unambiguous). `ft` as a base is implied, so
`ft+lwf` is the method `lwf` and `ft+l2sp+lwf` is `l2sp+lwf`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from typing import Any

from ribench.catalog import METHODS
from ribench.errors import ConfigError
from ribench.engine.method import Method, Regularizer
from ribench.engine.settings import parse_spec

def method_class(name: str) -> type[Method]:
    """The class for a method name, building `base+reg+...` combinations on demand."""
    parts = [p.strip() for p in name.split("+")]
    if len(parts) == 1:
        return METHODS.get(parts[0])
    if any(not p for p in parts):
        raise ConfigError(f"bad method '{name}': empty part in a '+' combination")
    return _combination(tuple(METHODS.canonical_name(p) for p in parts))


def _combination(parts: tuple[str, ...]) -> type[Method]:
    classes = [METHODS.get(p) for p in parts]
    if issubclass(classes[0], Regularizer):
        base, regs = METHODS.get("ft"), classes
    else:
        base, regs = classes[0], classes[1:]
    for cls in regs:
        if not issubclass(cls, Regularizer):
            raise ConfigError(f"'{cls.name}' is not a regularizer; only the first part of "
                              f"'{'+'.join(parts)}' may be a base method")
    if not base.composable:
        raise ConfigError(f"method '{base.name}' does not train through the loop; "
                          "regularizers cannot join it")
    names = tuple(sorted({cls.name for cls in regs}))
    if base.name == "ft" and len(names) == 1:
        return METHODS.get(names[0])
    return _combine(base.name, names)


@functools.lru_cache(maxsize=None)
def _combine(base_name: str, reg_names: tuple[str, ...]) -> type[Method]:
    return combine(METHODS.get(base_name), [METHODS.get(n) for n in reg_names])


def combine(base: type[Method], regs: list[type[Regularizer]]) -> type[Method]:
    parts = [base] + list(regs)
    name = "+".join(c.name for c in (regs if base.name == "ft" else parts))
    fields = [(_field(c.name), c.Config, dataclasses.field(default_factory=c.Config)) for c in parts]
    config_cls = dataclasses.make_dataclass("Config", fields)

    class Combination(Method):
        """A base method plus regularizers, one training run (see ribench.engine.compose)."""

        Config = config_cls
        requires_text_tower = any(c.requires_text_tower for c in parts)
        recipe = base.recipe                    # the base trains; the regularizers add penalties to its loss
        tunes_nothing = base.tunes_nothing
        members = tuple(parts)

        @classmethod
        def tunes_nothing_with(cls, config) -> bool:
            return base.tunes_nothing_with(getattr(config, _field(base.name)))

        def __init__(self, config=None):
            super().__init__(config)
            self.base = base(getattr(self.config, _field(base.name)))
            self.regs = [r(getattr(self.config, _field(r.name))) for r in regs]

        def ingredients(self):
            return self.base.ingredients()

        def prepare(self, ctx):
            self.base.prepare(ctx)
            for reg in self.regs:
                reg.prepare(ctx)

        def param_groups(self, ctx):
            return self.base.param_groups(ctx)

        def gradient_parameters(self, ctx, groups):
            return self.base.gradient_parameters(ctx, groups)

        def compute_loss(self, ctx, batch):
            loss = self.base.compute_loss(ctx, batch)
            for reg in self.regs:
                extra = reg.penalty(ctx, batch)
                if extra is not None:
                    loss = loss + extra
            return loss

        def after_backward(self, ctx):
            self.base.after_backward(ctx)
            for reg in self.regs:
                reg.after_backward(ctx)

        def weight_penalty(self, ctx):
            """The one part's penalty the fused step may fold in; none when two parts have one (the
            step folds one), so both then add theirs after backward."""
            found = [pen for pen in (part.weight_penalty(ctx) for part in [self.base, *self.regs]) if pen]
            return found[0] if len(found) == 1 else None

        def works_on_flat_weights(self, ctx):
            return self.base.works_on_flat_weights(ctx)

        def after_step(self, ctx):
            self.base.after_step(ctx)
            for reg in self.regs:
                reg.after_step(ctx)

        def finish(self, ctx):
            for reg in self.regs:
                reg.finish(ctx)
            self.base.finish(ctx)

        def learned(self, ctx):
            found = {}
            for part in [self.base, *self.regs]:
                found.update(part.learned(ctx))
            return found

        @classmethod
        def settings(cls, config):
            flat = {}
            for part in cls.members:
                for key, value in part.settings(getattr(config, _field(part.name))).items():
                    flat[f"{part.name}.{key}"] = value
            return flat

        @classmethod
        def setting_names(cls):
            qualified = {f"{p.name}.{k}" for p in cls.members for k in p.setting_names()}
            return qualified | {k for p in cls.members for k in p.setting_names()}   # bare: if unambiguous

        @classmethod
        def configure(cls, overrides):
            per_part: dict[str, dict[str, str]] = {p.name: {} for p in cls.members}
            for key, raw in overrides.items():
                part, _, setting = key.rpartition(".")
                if part:
                    if part not in per_part:
                        raise ConfigError(f"unknown part '{part}' in '{key}' for method '{cls.name}' "
                                          f"(parts: {', '.join(per_part)})")
                    per_part[part][setting] = raw
                    continue
                owners = [p.name for p in cls.members if key in p.setting_names()]
                if len(owners) > 1:
                    raise ConfigError(f"'{key}' is ambiguous in '{cls.name}'; write "
                                      + " or ".join(f"{o}.{key}" for o in owners))
                if not owners:
                    names = sorted(n for n in cls.setting_names() if "." in n)
                    close = difflib.get_close_matches(key, names, n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ConfigError(f"unknown setting '{key}' for method '{cls.name}'{hint} "
                                      f"(settings: {', '.join(names) or 'none'})")
                per_part[owners[0]][key] = raw
            return cls.Config(**{_field(p.name): p.configure(per_part[p.name]) for p in cls.members})

    Combination.name = name
    Combination.description = " + ".join(c.description.split(":")[0] for c in parts)
    Combination.__qualname__ = Combination.__name__ = "Combination_" + _field(name)
    return Combination


def _field(name: str) -> str:
    return re.sub(r"\W", "_", name)


def resolve_method(spec: str) -> tuple[type[Method], Any]:
    """'lp[fit=lbfgs]' or 'ft+lwf[alpha=0.5]' -> (class, config)."""
    name, overrides = parse_spec(spec)
    cls = method_class(name)
    return cls, cls.configure(overrides)
