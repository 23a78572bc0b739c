"""Classes named by `_target_`, in one place: a group's class imported with a one-line error
(evaluator, logger), and the rule that a saved config is data (only modulenet's own classes are
built from it unless the user trusts the run)."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from modulenet.errors import ModuleNetError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config tree (app/cli.py composes from it)


def target_class(key: str, target: str, builtins: str, base: type | None = None, called_with=None):
    """The class (or factory function) `target` names (given as `key`, e.g. "evaluator._target_"),
    checked against what its group needs before anything calls it: a subclass of `base` where the
    group has one; callable as `called_with` = (args, kwargs) where given. One line naming the
    built-in choices (`builtins`, e.g. "evaluator=local|gpus|ray") when it is not."""
    hydra_log = logging.getLogger("hydra.utils")  # it logs a failed lookup over three lines; ours is one
    level = hydra_log.level
    hydra_log.setLevel(logging.CRITICAL)
    try:
        found = get_object(target)
    except Exception as err:  # Hydra wraps ImportError / AttributeError, and refuses some names outright
        cause = " ".join(str(err.__cause__ or err).split())  # Hydra's refusals span lines: shown whole
        raise ModuleNetError(
            f"{key}={target!r} cannot be imported ({cause or type(err).__name__}); the built-in ones are {builtins}"
        ) from None
    finally:
        hydra_log.setLevel(level)
    if not callable(found):
        raise ModuleNetError(f"{key}={target!r} is not a class or function; the built-in ones are {builtins}")
    if base is not None and not (isinstance(found, type) and issubclass(found, base)):
        raise ModuleNetError(
            f"{key}={target!r} is not a subclass of {base.__module__}.{base.__qualname__}, which this group "
            f"needs; the built-in ones are {builtins}"
        )
    if called_with is not None:
        args, kwargs = called_with
        try:
            inspect.signature(found).bind(*args, **kwargs)
        except TypeError as err:
            raise ModuleNetError(
                f"{key}={target!r} cannot be called as this group calls it ({err}); the built-in ones are {builtins}"
            ) from None
        except ValueError:  # no signature to read (a builtin): let the call say
            pass
    return found


def group_choices(group: str) -> str:
    """The built-in choices of a config group as a command line writes them ("trainer=cpu|gpu")."""
    return f"{group}={'|'.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}"


@functools.cache
def built_in_targets() -> frozenset[str]:
    """Every `_target_` the shipped config tree names: the built-in datasets, knowledge bases,
    connections, evaluators, trackers, search and trainer settings. What a saved config may name."""
    found = set()
    for path in CONF_DIR.rglob("*.yaml"):
        found.update(re.findall(r"^\s*_target_:\s*([\w.]+)", path.read_text(), re.M))
    return frozenset(found - {"null"})


def check_targets(cfg, source, trusted: bool = False) -> None:
    """Refuse a saved config that names, at any depth, a `_target_` the shipped config tree does
    not: a run directory is data, so nothing else it names is imported or called (a dotted name
    under `modulenet.` reaches everything modulenet imports, `torch.load` included). `trust_code=true`
    on the command line lifts the rule for a run the user trusts."""
    if trusted:
        return
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    stack = [("", container)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and str(target) not in built_in_targets():
                key = f"{path}._target_" if path else "_target_"
                raise ModuleNetError(
                    f"{source} names {key}={target!r}, which is none of modulenet's built-in choices: a saved "
                    "config is data, so it builds only those (trust_code=true if you trust this run)"
                )
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
