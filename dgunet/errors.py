"""Errors a user can act on. The CLI prints their message alone, without a traceback."""


class DGUNetError(Exception):
    """Base class: the message names the file or value at fault and what to do."""


class CheckpointError(DGUNetError):
    """A weights file is missing, unsafe, unreadable or of another variant."""


class DataError(DGUNetError, ValueError):
    """A data set folder, image or .mat file is missing or not as expected.

    Also a ValueError (as PhysicsError), so code that catches a bad value in general still catches it.
    """


class ConfigError(DGUNetError, ValueError):
    """A configuration value, model or function option, or command-line combination cannot work.

    Also a ValueError (as PhysicsError), so code that catches a bad argument in general still catches it.
    """


class PhysicsError(DGUNetError, ValueError):
    """A degradation operator does not fit its input: wrong size, kernel, mask or missing operator."""


class StorageError(DGUNetError, OSError):
    """A file or folder cannot be written: read-only, permission denied, disk full, size limit.

    Also an OSError, so code that handles I/O errors in general still catches it. Built as
    StorageError(errno, message); str() is the message alone (no "[Errno N]" prefix).
    """

    def __str__(self) -> str:
        return self.strerror if isinstance(self.strerror, str) else super().__str__()
