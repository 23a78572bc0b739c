"""Classes named by `_target_`, in one place: a group's class imported with a one-line error
(evaluator, logger), and the rule that a saved config is data (only modulenet's own classes are
built from it unless the user trusts the run)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from modulenet.errors import ModuleNetError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config tree (app/cli.py composes from it)


def target_class(key: str, target: str, builtins: str):
    """The class (or factory function) `target` names (given as `key`, e.g. "evaluator._target_");
    one line naming the built-in choices (`builtins`, e.g. "evaluator=local|gpus|ray") when it
    cannot be imported or called."""
    hydra_log = logging.getLogger("hydra.utils")  # it logs a failed lookup over three lines; ours is one
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        found = get_object(target)
    except Exception as err:  # Hydra wraps ImportError / AttributeError
        cause = str(err.__cause__ or err).strip().splitlines()
        raise ModuleNetError(
            f"{key}={target!r} cannot be imported ({cause[0] if cause else type(err).__name__}); "
            f"the built-in ones are {builtins}"
        ) from None
    finally:
        hydra_log.setLevel(level)
    if not callable(found):
        raise ModuleNetError(f"{key}={target!r} is not a class or function; the built-in ones are {builtins}")
    return found


def group_choices(group: str) -> str:
    """The built-in choices of a config group as a command line writes them ("trainer=cpu|gpu")."""
    return f"{group}={'|'.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}"


def check_targets(cfg, source, trusted: bool = False, prefix: str = "modulenet.") -> None:
    """Refuse a saved config whose `_target_`s name anything but this project's classes (a run
    directory is data; `trust_code=true` lifts the rule for a run the user trusts)."""
    if trusted:
        return
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    stack = [container]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(prefix):
                raise ModuleNetError(
                    f"{source} names _target_ {target!r}, which is not modulenet's own: a saved config "
                    "is data, so only modulenet.* classes are built from it (trust_code=true if you "
                    "trust this run)"
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
