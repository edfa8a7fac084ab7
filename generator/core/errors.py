"""One exception tree for tritongen.

Every message says what failed and how to fix it, on one line, so the CLI can print it as is.
"""

from __future__ import annotations


class GeneratorError(Exception):
    """Base of every error tritongen raises for a user-facing problem.

    Attributes:
        problems: One line per problem; ``str(error)`` joins them. Most errors carry one.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: list[str] = [p for p in problems if p] or ["unknown error"]
        super().__init__("\n".join(self.problems))


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, or just ``Type`` when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """One line for a refusal of the file system (a path too long, no space, no permission), naming the fix."""
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}{where}; check the path, its permissions and free space"


class SpecError(GeneratorError):
    """The YAML spec is missing, malformed, or does not validate."""


class ExportError(GeneratorError):
    """A model could not be loaded from its source or exported."""


class VerificationError(GeneratorError):
    """The exported model's outputs do not match the source framework's."""


class ConfigError(GeneratorError):
    """A config.pbtxt could not be rendered, or rendered something other than intended."""


class ValidationError(GeneratorError):
    """A model repository has problems Triton would refuse at load time."""


class RepositoryError(GeneratorError):
    """The model repository could not be written or swapped in."""


class ServerError(GeneratorError):
    """The embedded Triton server could not start, load its models, or stop."""


class StorageError(GeneratorError):
    """A repository could not be pushed to, or read from, object storage (bad URI, endpoint, credentials)."""


class LoadTestError(GeneratorError):
    """A load test could not be set up or run: bad options, unreachable server, unknown model, bad data."""


class TuneError(GeneratorError):
    """A tune could not run as asked (options, search space, server), or no trial met the constraints."""


class DeployError(GeneratorError):
    """Kubernetes manifests could not be rendered, validated or sized as asked."""


class MissingDependencyError(GeneratorError):
    """An optional framework is needed but not installed."""

    @classmethod
    def for_package(cls, package: str, extra: str | None = None, purpose: str = "") -> MissingDependencyError:
        """Build the error for a missing package, naming the install command."""
        hint = f"pip install 'tritongen[{extra}]'" if extra else f"pip install {package}"
        why = f" (needed {purpose})" if purpose else ""
        return cls(f"the Python package '{package}' is not installed{why}; install it with: {hint}")
