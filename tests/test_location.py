"""Lesion location classes (MAGNIMS / McDonald): the rule on lesions placed at known positions of
the MNI152 template, and the sentence a clinician reads."""

from __future__ import annotations

import numpy as np
import pytest

from msnewlesions import template
from msnewlesions.io import Volume
from msnewlesions.location import (
    DEEP_WHITE_MATTER,
    INFRATENTORIAL,
    JUXTACORTICAL,
    PERIVENTRICULAR,
    below_tentorium,
    lesion_location,
    lesion_locations,
)
from msnewlesions.postprocessing import Lesion
from msnewlesions.report.wording import NO_NEW_LESION, findings_sentence


def ball(centre_mm: tuple[float, float, float], radius_mm: float = 2.5) -> np.ndarray:
    """The 1 mm grid points of a ball (a small lesion) around an MNI point."""
    offsets = np.mgrid[-4:5, -4:5, -4:5].reshape(3, -1).T.astype(float)
    return offsets[np.linalg.norm(offsets, axis=1) <= radius_mm] + np.array(centre_mm)


#: Anatomical positions in MNI152 (mm) and the class a reader gives a small lesion there.
KNOWN = {
    "pons": ((0, -25, -32), INFRATENTORIAL),
    "right cerebellar white matter": ((15, -58, -30), INFRATENTORIAL),
    "left cerebellar white matter": ((-15, -58, -30), INFRATENTORIAL),
    "vermis": ((0, -62, -18), INFRATENTORIAL),
    "middle cerebellar peduncle": ((18, -42, -30), INFRATENTORIAL),
    "beside the left frontal horn": ((-18, 12, 22), PERIVENTRICULAR),
    "beside the right trigone": ((28, -40, 15), PERIVENTRICULAR),
    "under the left frontal cortex": ((-30, 40, 30), JUXTACORTICAL),
    "under the right precentral cortex": ((35, -20, 55), JUXTACORTICAL),
    "right inferior temporal white matter (below z=0, above the tentorium)": (
        (42, -20, -20), JUXTACORTICAL
    ),
    "right centrum semiovale": ((26, -10, 34), DEEP_WHITE_MATTER),
    "left centrum semiovale": ((-28, -20, 30), DEEP_WHITE_MATTER),
}  # fmt: skip


@pytest.mark.parametrize("place", list(KNOWN))
def test_lesions_at_known_template_positions_get_their_class(place: str) -> None:
    centre, expected = KNOWN[place]
    assert lesion_location(ball(centre)) == expected


def test_the_tentorium_separates_the_cerebellum_from_the_occipital_and_temporal_lobes() -> None:
    below = below_tentorium(
        np.array(
            [
                [0, -30, -20],  # midbrain / pons
                [30, -70, -35],  # cerebellar hemisphere
                [0, -80, 10],  # occipital lobe above the straight sinus
                [25, -85, -5],  # occipital lobe above the cerebellum
                [45, -45, -15],  # inferior temporal gyrus
                [25, -20, -15],  # hippocampus
            ]
        )
    )
    assert below.tolist() == [True, True, False, False, False, False]


def test_a_label_map_gets_one_class_per_lesion_on_a_cropped_mni_grid() -> None:
    grid = template.mni_brain_mask()
    labels = np.zeros(grid.shape, np.int16)
    for number, place in enumerate(("pons", "right centrum semiovale"), start=1):
        index = np.round(grid.world_to_index(ball(KNOWN[place][0]))).astype(int)
        labels[tuple(index.T)] = number
    box = (slice(20, 180), slice(15, 215), slice(10, 170))  # the network's grid is a crop
    affine = grid.affine.copy()
    affine[:3, 3] = grid.index_to_world(np.array([[20, 15, 10]]))[0]
    cropped = Volume(labels[box], affine)
    assert lesion_locations(cropped) == {1: INFRATENTORIAL, 2: DEEP_WHITE_MATTER}


def lesion(number: int, volume_mm3: float, place: str) -> Lesion:
    return Lesion(number, int(volume_mm3), volume_mm3, 1, (0, 0, 0), (0, 0, 0), 0.9, place)


def test_the_findings_read_as_a_clinician_writes_them() -> None:
    lesions = [
        lesion(1, 120.0, PERIVENTRICULAR),
        lesion(2, 40.0, JUXTACORTICAL),
        lesion(3, 30.0, PERIVENTRICULAR),
        lesion(4, 20.0, DEEP_WHITE_MATTER),
    ]
    assert findings_sentence(lesions) == (
        "4 new lesions (0.21 ml): 2 periventricular, 1 juxtacortical/cortical, "
        "1 deep white matter; no new infratentorial lesion."
    )
    one = findings_sentence([lesion(1, 500.0, INFRATENTORIAL)])
    assert one == "1 new lesion (0.50 ml): 1 infratentorial."
    assert findings_sentence([]) == NO_NEW_LESION
    assert "review" in NO_NEW_LESION.lower()
