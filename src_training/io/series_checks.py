"""Checks that the slices of one DICOM series agree before they are stacked (:mod:`src_training.io`):
the rescale to HU (every slice converted with its own RescaleSlope / RescaleIntercept, a series in which
some slices lack them refused, differing values reported by file) and localizer (scout) images, which are
2-D overviews and never part of the volume.

Sources: CT Image module, PS3.3 C.8.2.1 (RescaleIntercept / RescaleSlope type 1, RescaleType required when
the units are not HU; ImageType value 3 LOCALIZER / AXIAL, C.8.2.1.1.1). What the user sees:
docs/reliability.md.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import pydicom

from ..errors import CTLoadError
from .dicom_header import _image_type, _is_localizer
from .dicom_pixels import _check_rescale_type, _rescale

#: How many file names a message lists before "and N more".
_NAMES_SHOWN = 5


def _names(files: Sequence[str]) -> str:
    """``"IM_1.dcm, IM_2.dcm"`` (file names only, the first few, then ``and N more``)."""
    shown = ", ".join(Path(f).name for f in files[:_NAMES_SHOWN])
    return shown + (f" and {len(files) - _NAMES_SHOWN} more" if len(files) > _NAMES_SHOWN else "")


def _present(ds: pydicom.Dataset, keyword: str) -> bool:
    try:
        return keyword in ds and ds.get(keyword) not in (None, "")
    except Exception:  # noqa: BLE001 - a malformed value counts as present (then refused by _rescale)
        return True


def _series_rescales(
    headers: Sequence[tuple[str, pydicom.Dataset]], where: str, warnings_out: list[str]
) -> list[tuple[float, float]]:
    """``(slope, intercept)`` of every slice, each from its own tags (the only path from stored values to HU).

    Parameters
    ----------
    headers : sequence of (path, dataset)
        The slices of one series (any order).
    where : str
        Start of the messages (``"series <uid> in <folder>"`` or a file path).
    warnings_out : list of str
        Gets "RescaleSlope/RescaleIntercept absent ..." when no slice has them (identity assumed) and
        "the rescale differs between slices ..." naming the files whose values differ from the majority.

    Returns
    -------
    list of (float, float)
        Slope and intercept (HU = stored x slope + intercept) in the order of ``headers``.

    Raises
    ------
    CTLoadError
        Some slices lack RescaleSlope or RescaleIntercept while others have them (the files lacking them are
        named with the value the others have: such a slice would be off by the intercept, typically 1024
        HU); a RescaleType other than HU; a slope that is not a positive finite number (file named).
    """
    n = len(headers)
    for keyword in ("RescaleIntercept", "RescaleSlope"):
        lacking = [f for f, ds in headers if not _present(ds, keyword)]
        if lacking and len(lacking) < n:
            values = Counter()
            for _, ds in headers:
                if _present(ds, keyword):
                    try:
                        values[float(ds.get(keyword))] += 1
                    except Exception:  # noqa: BLE001 - reported by _rescale below
                        continue
            common = values.most_common(1)[0][0] if values else None
            other = f" {common:g}" if common is not None else ""
            one = len(lacking) == 1
            if keyword == "RescaleIntercept" and common:
                effect = f"{'it' if one else 'they'} would read {abs(common):g} HU off"
            else:
                effect = f"{'its' if one else 'their'} values would be scaled wrongly"
            raise CTLoadError(
                f"{where}: {keyword} is missing in {_names(lacking)} ({len(lacking)} of {n} files) while the other "
                f"slices have {keyword}{other}. Without it the stored values of "
                f"{'that slice' if one else 'those slices'} cannot be converted to HU ({effect}). Re-export the "
                f"series, or remove {'that file' if one else 'those files'} if {'it does' if one else 'they do'} "
                "not belong to the series."
            )
    for f, ds in headers:
        _check_rescale_type(ds, f, warnings_out)
    rescales = [_rescale(ds, f, warnings_out) for f, ds in headers]
    counts = Counter(rescales)
    if len(counts) > 1:
        (s0, i0), n0 = counts.most_common(1)[0]
        odd = [(f, r) for (f, _), r in zip(headers, rescales) if r != (s0, i0)]
        listed = ", ".join(f"{Path(f).name} ({s:g} / {i:g})" for f, (s, i) in odd[:_NAMES_SHOWN])
        more = f" and {len(odd) - _NAMES_SHOWN} more" if len(odd) > _NAMES_SHOWN else ""
        warnings_out.append(
            f"the rescale differs between slices: {listed}{more} {'has' if len(odd) == 1 else 'have'} "
            f"RescaleSlope / RescaleIntercept different from the other {n0} slice(s) ({s0:g} / {i0:g}); each "
            "slice was converted to HU with its own values."
        )
    return rescales


def _drop_localizers(
    headers: list[tuple[str, pydicom.Dataset]], where: str, warnings_out: list[str]
) -> list[tuple[str, pydicom.Dataset]]:
    """The slices of ``headers`` that are not localizer (scout) images; those dropped are named in a warning.

    Raises
    ------
    CTLoadError
        Every file is a localizer: the message contains "localizer (scout)" and says what to choose.
    """
    scouts = [f for f, ds in headers if _is_localizer(ds)]
    if not scouts:
        return headers
    if len(scouts) == len(headers):
        kind = "\\".join(_image_type(headers[0][1]))
        what = f"{where} is" if len(headers) == 1 else f"{where}: all {len(headers)} images are"
        raise CTLoadError(
            f"{what} a localizer (scout) image{'' if len(headers) == 1 else 's'} (ImageType {kind}): a 2-D "
            "overview used to plan the scan, not a CT volume. Choose the CT series of the same study."
        )
    warnings_out.append(
        f"dropped {len(scouts)} localizer (scout) image(s) stored in the series: {_names(scouts)}."
    )
    dropped = set(scouts)
    return [(f, ds) for f, ds in headers if f not in dropped]
