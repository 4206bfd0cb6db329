"""The one base exception every builder error derives from; the CLI turns it into one line."""


class BuilderError(Exception):
    """An error the user can act on: the message says what was wrong and what to do."""


class MatrixError(BuilderError):
    """The targets or versions data file is missing or invalid."""


class UnknownTargetError(BuilderError):
    """An architecture name that the targets data file does not declare."""


class RenderDriftError(BuilderError):
    """A committed generated file differs from a fresh render."""


class LockError(BuilderError):
    """Resolving or reading the lock failed."""


class DockerUnavailableError(BuilderError):
    """No Docker engine answers."""


class BuildError(BuilderError):
    """An image build failed."""
