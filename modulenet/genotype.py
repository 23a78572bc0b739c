"""Genotype encoding of Sec. III-C: a string i_1 i_2 ... i_c with i_j the architecture of cell j.

Positions are 0-based here (`[1, 0, 0, 0, 0]` takes cell 1 from the second architecture),
so a genotype is c integers in [0, n) and the search space has |Omega| = n^c members.
Plain Python: the search loop uses it without torch.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

from modulenet.errors import GenotypeError

Genotype = tuple[int, ...]


def search_space_size(n: int, c: int) -> int:
    """|Omega| = n^c (Sec. III-C)."""
    return int(n) ** int(c)


def parse_genotype(value, arch_names: Sequence[str] | int, num_cells: int) -> Genotype:
    """Decode `value` into a validated genotype of `num_cells` integers in [0, n).

    Accepted forms: a digit string (`"21111"`, for n <= 10), a separated string
    (`"2,1,1,1,1"`, `"2 1 1 1 1"`, `"resnet34,vgg16,..."`), or a sequence of integers
    and/or architecture names. `arch_names` is the knowledge base's ordered names, or n.
    """
    names = list(arch_names) if not isinstance(arch_names, numbers.Integral) else None
    n = len(names) if names is not None else int(arch_names)
    _check_compact_string(value, names, n, num_cells)
    items = _split(value, n)
    if len(items) != num_cells:
        raise GenotypeError(
            f"genotype {_show(value)} has {len(items)} positions; the knowledge base has c = {num_cells} cells"
        )
    return tuple(_decode_position(pos, item, names, n) for pos, item in enumerate(items))


def format_genotype(code: Sequence[int]) -> str:
    """The paper's compact string (`"21111"`), comma-separated once an index needs two digits."""
    sep = "" if all(0 <= i < 10 for i in code) else ","
    return sep.join(str(int(i)) for i in code)


def is_original(code: Sequence) -> bool:
    """`[i] * c`: architecture i's own modules in order, no mix of sources (Sec. III-B)."""
    return len(set(code)) == 1


def read_genotype_text(text: str, num_cells: int | None) -> tuple[int, ...]:
    """A genotype as `format_genotype` writes it: "21111", or "1,10,2" once an index has two digits."""
    text = str(text).strip()
    if "," in text or " " in text:
        return tuple(int(i) for i in re.split(r"[,\s]+", text) if i)
    if num_cells == 1:
        return (int(text),)
    return tuple(int(ch) for ch in text)


def describe_genotype(code: Sequence[int], arch_names: Sequence[str]) -> list[str]:
    """The source architecture of each cell, e.g. `['vgg16_bn', 'resnet34', ...]`."""
    return [arch_names[i] for i in code]


def _split(value, n: int) -> list:
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text) and n <= 10:
            return list(text)
        return [part for part in re.split(r"[\s,;/]+", text) if part]
    if isinstance(value, numbers.Integral) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise GenotypeError(
            f"genotype {_show(value)} is not a sequence: give a string like '21111' or a list of integers or names"
        )
    return list(value)


def _check_compact_string(value, names: list[str] | None, n: int, num_cells: int) -> None:
    """A separator-free string of digits and other characters (`"0a1"`) is a compact genotype with a
    typo: name the first character that is not a digit, rather than count it as one position."""
    if not isinstance(value, str) or n > 10:
        return
    text = value.strip()
    if not text or re.search(r"[\s,;/]", text) or re.fullmatch(r"-?\d+", text) or (names is not None and text in names):
        return
    digits = sum(ch.isdigit() for ch in text)
    others = len(text) - digits
    if digits == 0 or others == 0:
        return
    if len(text) != num_cells and digits < others:  # more like one name ('resnet20') than digits with a typo
        return
    pos, ch = next((i, ch) for i, ch in enumerate(text) if not ch.isdigit())
    raise GenotypeError(f"genotype {_show(value)}: position {pos} is {ch!r}; valid values are {_valid(names, n)}")


def _valid(names: list[str] | None, n: int) -> str:
    return f"integers in [0, {n - 1}]" + (f" or names in {names}" if names else "")


def _decode_position(pos: int, item, names: list[str] | None, n: int) -> int:
    if isinstance(item, bool):
        raise GenotypeError(f"genotype position {pos} is {item!r}; valid values are integers in [0, {n - 1}]")
    if isinstance(item, numbers.Integral):
        index = int(item)
    elif isinstance(item, str) and re.fullmatch(r"-?\d+", item.strip()):
        index = int(item)
    elif isinstance(item, str) and names is not None and item.strip() in names:
        return names.index(item.strip())
    else:
        raise GenotypeError(f"genotype position {pos} is {item!r}; valid values are {_valid(names, n)}")
    if not 0 <= index < n:
        raise GenotypeError(f"genotype position {pos} is {index}; valid range is [0, {n - 1}] (n = {n} architectures)")
    return index


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(list(value) if hasattr(value, "__iter__") else value)


def cell_shares(population: list[tuple[int, ...]], num_archs: int) -> list[list[float]]:
    """How the population has converged: at each cell position j, the share of the population
    whose module there comes from each source architecture i (`shares[j][i]`)."""
    n = max(1, len(population))
    cells = len(population[0]) if population else 0
    return [[sum(code[j] == i for code in population) / n for i in range(num_archs)] for j in range(cells)]
