"""Labels: how a run's cells are named in reports and leaderboards ('ft', 'lp[fit=lbfgs]', 'ft[lr=0.0001]')."""

from __future__ import annotations

from ribench.engine.compose import resolve_method


def protocol_changes(protocol, suite_protocol) -> dict:
    """The protocol settings a run overrides (`--set lr=...`), so that its label tells it apart."""
    base = suite_protocol.as_dict()
    return {k: v for k, v in protocol.as_dict().items() if base.get(k) != v}


def method_label(method_cls, config, protocol_changed: dict | None = None, defaults: dict | None = None) -> str:
    """'ft', 'lp[fit=lbfgs]' when hyperparameters differ from the defaults, 'ft[lr=0.0001]' off the suite's protocol.

    Two runs that differ only in protocol would otherwise share a label, and the
    report could not tell their cells apart.
    """
    defaults = method_cls.defaults() if defaults is None else defaults
    changed = {k: v for k, v in method_cls.settings(config).items() if defaults.get(k) != v}
    changed.update(protocol_changed or {})
    if not changed:
        return method_cls.name
    return method_cls.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) + "]"


def run_label(spec) -> str:
    """The label of a run's cells: its method settings and its protocol changes, each against what
    the run's protocol starts from (under `tuned`: the recipe at its chosen value)."""
    base_protocol = spec.base_protocol or spec.suite.protocol
    return method_label(spec.method_cls, spec.method_config, protocol_changes(spec.protocol, base_protocol),
                        spec.label_defaults)


def resolve_label(method: str) -> tuple[type, object, str]:
    """A method spec as (class, config, label): 'lwf[alpha=0.5]' -> (LwF, its config, 'lwf[alpha=0.5]')."""
    cls, config = resolve_method(method)
    return cls, config, method_label(cls, config)
