"""The findings in a clinician's words: one sentence for the top of the report."""

from __future__ import annotations

from collections.abc import Sequence

from msnewlesions.location import INFRATENTORIAL, LOCATIONS
from msnewlesions.postprocessing import Lesion

NO_NEW_LESION = (
    "No new lesion was found. Review both visits before concluding: a small or faint lesion can "
    "be missed."
)


def findings_sentence(lesions: Sequence[Lesion]) -> str:
    """``N new lesions (V ml): x periventricular, y juxtacortical/cortical, ...; no new
    infratentorial lesion.``, or :data:`NO_NEW_LESION`."""
    if not lesions:
        return NO_NEW_LESION
    volume_ml = sum(lesion.volume_mm3 for lesion in lesions) / 1000
    counts = {place: sum(lesion.location == place for lesion in lesions) for place in LOCATIONS}
    parts = [f"{count} {place}" for place, count in counts.items() if count]
    unplaced = len(lesions) - sum(counts.values())
    if unplaced:
        parts.append(f"{unplaced} unclassified")
    noun = "lesion" if len(lesions) == 1 else "lesions"
    sentence = f"{len(lesions)} new {noun} ({volume_ml:.2f} ml): {', '.join(parts)}"
    if not counts[INFRATENTORIAL]:
        sentence += "; no new infratentorial lesion"
    return sentence + "."
