"""Is a scan a FLAIR? Its tissue contrast alone, and against the other visit's.

Both are read on the heads registered to the MNI152 template with their skull (the pipeline's
first step), where the template's tissue maps are surely one tissue (their *cores*: white matter
above 0.95 eroded by 2 voxels, grey matter above 0.9, CSF above 0.95), so that the blur of a
rigid fit between people does not mix them:

* **one scan** (:func:`tissue_contrast`): a FLAIR has grey matter about as bright as white matter
  or brighter and dark CSF. T1-weighted scans (with or without a contrast agent) have white
  matter brighter than grey; T2- and proton-density-weighted scans have bright CSF.
* **the two visits** (:func:`tissue_correlation`): inside grey and white matter (CSF left out,
  where FLAIR and T1 are both dark), the intensities of two FLAIRs of one head rise and fall
  together; a FLAIR and a T1-weighted scan of that head do not (their grey/white order is
  reversed), nor a FLAIR and a T2-weighted one. This catches a non-FLAIR whose own contrast is
  borderline.

Measured by ``benchmarks/input_checks.py`` on open_ms_data's real scans (the longitudinal
patients' FLAIR, T1W and T2W of each visit, the brain-extracted cross-sectional FLAIRs):

* grey/white: the 10 FLAIRs 0.97-1.14, the 4 T1W 0.84-0.91, the MNI152 T1 template 0.74;
* CSF/white: the FLAIRs 0.35-0.96, the 5 T2W 1.93-3.05;
* visits' correlation in grey and white matter (each head registered to the template alone):
  one patient's two FLAIRs 0.76 (two protocols) and 0.90, a FLAIR with another patient's FLAIR
  0.43-0.64, a FLAIR with its patient's T1W -0.11-0.33 and T2W 0.12-0.42.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from msnewlesions import template
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume

#: Refused below this grey/white (as T1-weighted), warned below the next.
MIN_GREY_TO_WHITE = 0.93
WARN_GREY_TO_WHITE = 0.96
#: Refused above this CSF/white (as T2- or PD-weighted), warned above the next.
MAX_CSF_TO_WHITE = 1.50
WARN_CSF_TO_WHITE = 1.10
#: Refused below this correlation of the two visits in grey and white matter, warned below the
#: next.
MIN_TISSUE_CORRELATION = 0.50
WARN_TISSUE_CORRELATION = 0.65


@dataclass(frozen=True)
class Cores:
    white: np.ndarray
    grey: np.ndarray
    csf: np.ndarray

    @property
    def tissue(self) -> np.ndarray:
        return self.white | self.grey


@functools.lru_cache(maxsize=1)
def cores() -> Cores:
    """Where the template is surely white matter, grey matter or CSF (on its own grid)."""
    white = template.mni_white_matter().array
    grey = template.mni_grey_matter().array
    csf = template.mni_csf().array
    return Cores(
        ndimage.binary_erosion(white > 0.95, iterations=2), (grey > 0.9) & (csf < 0.05), csf > 0.95
    )


@dataclass(frozen=True)
class TissueContrast:
    """Median intensities of a scan's grey matter and CSF over its white matter's."""

    grey_to_white: float
    csf_to_white: float


def tissue_contrast(head_mni: Volume) -> TissueContrast:
    """A scan's tissue contrast on the template's grid (a rigid fit of its head)."""
    array = head_mni.array
    inside = array > 0
    found = cores()
    medians = []
    for core in (found.white, found.grey, found.csf):
        values = array[core & inside]
        medians.append(float(np.median(values)) if values.size else 0.0)
    white, grey, csf = medians
    if white <= 0:
        return TissueContrast(float("nan"), float("nan"))
    return TissueContrast(round(grey / white, 4), round(csf / white, 4))


def check_contrast(contrast: TissueContrast, name: str) -> list[str]:
    """Refuse a scan whose contrast is plainly not a FLAIR's; the warnings of a doubtful one."""
    if not np.isfinite(contrast.grey_to_white):
        raise MSNewLesionsError(
            f"{name} shows no white matter where the MNI template has it; check that it is a "
            "head MRI with a correct orientation in its header."
        )
    if contrast.csf_to_white > MAX_CSF_TO_WHITE:
        raise MSNewLesionsError(
            f"{name} does not look like a FLAIR but T2- or PD-weighted: its CSF is brighter than "
            f"its white matter (CSF/white {contrast.csf_to_white:.2f}, a FLAIR's is dark); give "
            "the FLAIR series."
        )
    if contrast.grey_to_white < MIN_GREY_TO_WHITE:
        raise MSNewLesionsError(
            f"{name} does not look like a FLAIR but T1-weighted: its white matter is brighter "
            f"than its grey matter (grey/white {contrast.grey_to_white:.2f}, a FLAIR has at least "
            f"{MIN_GREY_TO_WHITE}); give the FLAIR series."
        )
    warnings = []
    if contrast.grey_to_white < WARN_GREY_TO_WHITE:
        warnings.append(
            f"{name}'s grey matter is darker than a FLAIR's (grey/white "
            f"{contrast.grey_to_white:.2f}): check that it is a FLAIR, not a T1-weighted scan"
        )
    if contrast.csf_to_white > WARN_CSF_TO_WHITE:
        warnings.append(
            f"{name}'s CSF is brighter than a FLAIR's (CSF/white {contrast.csf_to_white:.2f}): "
            "check that it is a FLAIR, not a T2- or PD-weighted scan"
        )
    return warnings


def tissue_correlation(first_head_mni: Volume, second_head_mni: Volume) -> float:
    """Pearson correlation of two registered heads inside the template's grey and white matter."""
    first, second = first_head_mni.array, second_head_mni.array
    inside = cores().tissue & (first > 0) & (second > 0)
    if inside.sum() < 1000:
        return float("nan")
    return float(np.corrcoef(first[inside], second[inside])[0, 1])


def _kind(contrast: TissueContrast, other: TissueContrast) -> str:
    if contrast.csf_to_white - other.csf_to_white > 0.3:
        return "T2- or PD-weighted"
    if contrast.grey_to_white < other.grey_to_white:
        return "T1-weighted"
    return "another weighting"


def _least_flair_like(contrasts: dict[str, TissueContrast]) -> str:
    def distance(contrast: TissueContrast) -> float:  # how far from a FLAIR, in either way
        return max(
            MIN_GREY_TO_WHITE - contrast.grey_to_white,
            (contrast.csf_to_white - MAX_CSF_TO_WHITE) / 2,
        )

    return max(contrasts, key=lambda role: distance(contrasts[role]))


def name_doubtful_contrast(contrasts: dict[str, TissueContrast], names: dict[str, str]) -> None:
    """For two heads that do not align: refuse, naming it, a visit whose contrast is doubtful
    (past a warning threshold) as the weighting it looks like; else return."""
    doubtful = {
        role: c
        for role, c in contrasts.items()
        if c.grey_to_white < WARN_GREY_TO_WHITE or c.csf_to_white > WARN_CSF_TO_WHITE
    }
    if not doubtful:
        return
    role = _least_flair_like(doubtful)
    contrast, other = contrasts[role], next(c for r, c in contrasts.items() if r != role)
    raise MSNewLesionsError(
        f"{names[role]} does not look like a FLAIR but {_kind(contrast, other)}: its tissue "
        f"contrast is not a FLAIR's (grey/white {contrast.grey_to_white:.2f}, CSF/white "
        f"{contrast.csf_to_white:.2f}; the other visit {other.grey_to_white:.2f} and "
        f"{other.csf_to_white:.2f}) and it does not align with the other visit; give the FLAIR "
        "series of both visits."
    )


def check_visits_alike(
    correlation: float, contrasts: dict[str, TissueContrast], names: dict[str, str]
) -> list[str]:
    """Refuse a pair whose visits' contrasts differ as a FLAIR's and another weighting's do,
    naming the visit (``contrasts`` and ``names`` by role: baseline, follow-up) that looks less
    like a FLAIR and what it looks like; the warning of a doubtful pair."""
    if not np.isfinite(correlation) or correlation >= WARN_TISSUE_CORRELATION:
        return []

    role = _least_flair_like(contrasts)
    contrast, other = contrasts[role], next(c for r, c in contrasts.items() if r != role)
    kind = _kind(contrast, other)
    if correlation < MIN_TISSUE_CORRELATION:
        raise MSNewLesionsError(
            f"{names[role]} does not look like a FLAIR but {kind}: in grey and white matter its "
            f"signal does not follow the other visit's (correlation {correlation:.2f}; two "
            f"FLAIRs of one head: above {MIN_TISSUE_CORRELATION}; grey/white "
            f"{contrast.grey_to_white:.2f} against {other.grey_to_white:.2f}); give the FLAIR "
            "series of both visits."
        )
    return [
        f"the two visits' contrasts differ (correlation {correlation:.2f} in grey and white "
        f"matter): check that {names[role]} is a FLAIR, not a {kind} scan"
    ]
