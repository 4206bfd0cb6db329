"""Domain errors: one base class carrying the exit code, one subclass per refusal."""

from __future__ import annotations


class LauncherError(Exception):
    """A refusal the CLI turns into one line on stderr and a distinct exit code."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(LauncherError):
    """A bad flag or KTHYBRID_* value (argparse uses the same code)."""

    exit_code = 2


class NoGpuError(LauncherError):
    exit_code = 10


class ArchMismatchError(LauncherError):
    exit_code = 11


class DriverTooOldError(LauncherError):
    exit_code = 12


class HostMemoryError(LauncherError):
    exit_code = 13


class CgroupMemoryError(LauncherError):
    exit_code = 14


class CpuIsaError(LauncherError):
    exit_code = 15


class ShmTooSmallError(LauncherError):
    exit_code = 16


class ModelIncompleteError(LauncherError):
    exit_code = 17


class HugepagesError(LauncherError):
    exit_code = 18


class GpuMemoryError(LauncherError):
    exit_code = 19


class CpuTopologyError(LauncherError):
    exit_code = 20


class WeightFormatError(LauncherError):
    exit_code = 21


class HostReadError(LauncherError):
    exit_code = 22


class MissingToolError(LauncherError):
    exit_code = 23


class GpuCountError(LauncherError):
    exit_code = 24


class MissingKernelError(LauncherError):
    """A GPU path the plan needs imports a package the image lacks (Hopper's flash_mla)."""

    exit_code = 25


class DiskSpaceError(LauncherError):
    """Not enough free space on the file system the converter writes to."""

    exit_code = 26


class BenchError(LauncherError):
    """`bench`/`tune` could not measure: no kt-kernel, every run failed, too little memory."""

    exit_code = 27


class TuneError(LauncherError):
    """A tune record that cannot be read or written (names the file and the fix)."""

    exit_code = 28


class MetricsError(LauncherError):
    """The plan's metrics cannot be written for sglang's /metrics (names the directory)."""

    exit_code = 29


ALL_ERRORS: tuple[type[LauncherError], ...] = (
    UsageError,
    NoGpuError,
    ArchMismatchError,
    DriverTooOldError,
    HostMemoryError,
    CgroupMemoryError,
    CpuIsaError,
    ShmTooSmallError,
    ModelIncompleteError,
    HugepagesError,
    GpuMemoryError,
    CpuTopologyError,
    WeightFormatError,
    HostReadError,
    MissingToolError,
    GpuCountError,
    MissingKernelError,
    DiskSpaceError,
    BenchError,
    TuneError,
    MetricsError,
)


class WorkerError(Exception):
    """A kt-kernel measurement that cannot be made (in the bench's worker process).

    Not a LauncherError: the worker reports it as `"ok": false` with this one line.
    """
