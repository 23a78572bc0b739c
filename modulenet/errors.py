"""User-facing errors: one line that names the offending value and what would be valid.

Entry points catch `ModuleNetError` and print its message without a traceback; anything
else is a bug and keeps its traceback.
"""


class ModuleNetError(Exception):
    """A mistake in the user's input (config, file, genotype), explained in one line."""


class GenotypeError(ModuleNetError, ValueError):
    """A genotype that does not decode to an architecture of the knowledge base."""


class KnowledgeBaseError(ModuleNetError, ValueError):
    """An architecture, cut point or knowledge-base directory that cannot be used."""


class WeightsError(ModuleNetError):
    """A weights file that is missing, corrupt, unsafe or of the wrong architecture."""


class DataError(ModuleNetError, ValueError):
    """A dataset that is missing, unreadable or asked for with settings that cannot work."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name where it has none): an error
    from a library, quoted inside one of ours."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
