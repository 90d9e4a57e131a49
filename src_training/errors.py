"""Error types of napari-lidnet.

Every failure a user can cause (bad file, bad configuration, bad checkpoint) raises a subclass of
:class:`LidnetError` whose message says what is wrong and what to do. The napari plugin catches
``LidnetError`` and shows the message as a notification instead of a traceback.
"""

from __future__ import annotations


class LidnetError(Exception):
    """Base class of all napari-lidnet errors meant to be shown to a user."""


class CTLoadError(LidnetError, ValueError):
    """A CT file or folder cannot be read as a CT volume (corrupt, wrong modality, missing slices...)."""


class MultipleSeriesError(CTLoadError):
    """A folder holds several DICOM series and none was chosen.

    Attributes
    ----------
    series : list
        The :class:`src_training.io.SeriesInfo` of every series found, so a caller can offer a choice.
    """

    def __init__(self, message: str, series: list | None = None):
        super().__init__(message)
        self.series = list(series or [])


class CheckpointError(LidnetError):
    """A checkpoint file is missing, corrupt, untrusted (not loadable with ``weights_only=True``) or of the
    wrong kind."""


class ConfigError(LidnetError, ValueError):
    """A configuration value is unknown or out of range."""


class SimulationError(LidnetError, ValueError):
    """Low-dose simulation got input it cannot simulate (NaN, wrong shape, non-positive N0...)."""


class CTWriteError(LidnetError, ValueError):
    """A CT volume or DICOM series cannot be written (NaN values, bad geometry, unwritable folder)."""


class OutputExistsError(LidnetError, FileExistsError):
    """The output folder/file already exists and holds data; nothing was written (pass overwrite=True to
    replace a folder of DICOM files)."""
