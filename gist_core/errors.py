"""Every error gist_core raises for the user: one base, GistError, and one kind per concern.

Each message is one line that names the problem (file, line, field). The CLI prints it and exits 2;
the dashboard shows it. Each kind keeps the builtin base it had (ValueError, RuntimeError) so code that
catches those still works. Import them from here (`from gist_core.errors import DataError`), also to catch
them: the modules that raise them are not a second address.
"""
from __future__ import annotations


class GistError(Exception):
    """Base of every user-facing gist_core error."""


class DataError(GistError, ValueError):
    """Input examples that cannot be used, e.g. "pool.jsonl:17: field 'output' is empty"."""


class ConfigError(GistError, ValueError):
    """A run configuration that cannot work."""


class ModelError(GistError, ValueError):
    """A model that cannot be loaded or wrapped with LoRA."""


class ModelSourceError(GistError, ValueError):
    """A model that cannot be found, fetched or converted (GGUF, the registry)."""


class StoreError(GistError, RuntimeError):
    """A run folder that cannot be read or written as recorded."""


class RunLockedError(StoreError):
    """Another process is writing the run folder (one writer per run folder)."""


class ArtefactError(StoreError):
    """A stored array is not what was written (wrong dtype or shape, missing tensor, unreadable file)."""


class StaleArtefact(ArtefactError):
    """A file written in an older artefact format (before the C-order guard): not to be trusted as is."""


class RunNameError(GistError, ValueError):
    """A run name or upload file name that is refused (it could leave the runs folder)."""


class LaunchError(GistError, RuntimeError):
    """A dashboard launch that cannot start."""


class DistError(GistError, RuntimeError):
    """Another rank failed; carries that rank's one-line message."""


class GradientError(GistError, RuntimeError):
    """Per-example gradients could not be computed (NaN/inf, unsupported trainable parameter)."""

    def __init__(self, message: str, positions: list[int] | None = None):
        super().__init__(message)
        self.positions = positions  # batch positions of the offending examples, when known


class SubspaceError(GistError, RuntimeError):
    """A validation-gradient matrix whose subspace cannot be fitted."""


class MomentsError(GistError, ValueError):
    """A checkpoint whose optimizer state cannot be mapped onto the model's LoRA parameters."""


class GeometryError(GistError, ValueError):
    """A LoRA block that cannot be measured (unknown module, no LoRA there)."""


class CurationError(GistError, ValueError):
    """A hand edit or an export of a working selection that cannot be made (unknown row ids, an empty group)."""
