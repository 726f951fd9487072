"""The brain's parenchyma (the brain mask without the fluid at its surface) and the depth rule
that ``segment`` measures inside it, on a spherical phantom whose layers are known."""

from __future__ import annotations

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.lesions import PostprocessingSettings, lesion_depths_mm
from msnewlesions.preprocessing.parenchyma import parenchyma_mask
from msnewlesions.segment import predict_lesions
from tests.fakes import CubesPredictor

SIZE, CENTRE = 80, 40
#: Radii (mm) of the phantom's layers: ventricle < white matter < grey matter < fluid < brain.
VENTRICLE, WHITE, GREY, BRAIN = 6, 25, 31, 35
WHITE_Z, GREY_Z, FLUID_Z = 1.0, 0.3, -2.5


def radius() -> np.ndarray:
    grid = np.indices((SIZE,) * 3) - CENTRE
    return np.sqrt((grid**2).sum(axis=0))


def channel() -> np.ndarray:
    """The 2 x 2 mm channel from the ventricle to the surface, along -x."""
    mask = np.zeros((SIZE,) * 3, bool)
    mask[CENTRE - GREY - 1 : CENTRE, CENTRE : CENTRE + 2, CENTRE : CENTRE + 2] = True
    return mask


def phantom(surface_fluid_z: float = FLUID_Z, seed: int = 0) -> tuple[Volume, Volume]:
    """A z-scored FLAIR of the phantom (1 mm, identity affine) and its brain mask: a 4 mm layer
    of fluid at the surface (``surface_fluid_z``), grey matter, white matter, a dark ventricle
    joined to the surface fluid by a 2 mm channel (as the fourth ventricle opens to the
    cisterns)."""
    r = radius()
    image = np.where(r <= WHITE, WHITE_Z, np.where(r <= GREY, GREY_Z, surface_fluid_z))
    image = np.where((r <= VENTRICLE) | channel(), FLUID_Z, image)
    image = image + np.random.default_rng(seed).normal(0, 0.1, image.shape)
    brain = r <= BRAIN
    image = np.where(brain, image, 0.0).astype(np.float32)
    return Volume(image, np.eye(4)), Volume(brain.astype(np.uint8), np.eye(4))


def test_the_surface_fluid_goes_and_the_ventricle_stays() -> None:
    """Exactly the 4 mm layer of fluid goes, with the channel's outer 8 mm: the tissue, the
    ventricle (29 mm deep, beyond the 8 mm the surface fluid may reach) and the channel's deep
    part stay."""
    image, brain = phantom()
    parenchyma = parenchyma_mask([image, image], brain).array > 0
    r = radius()
    assert parenchyma[r <= BRAIN - 8.5].all()  # tissue, ventricle, the channel's deep part
    assert parenchyma[(r <= GREY - 0.5) & ~channel()].all()
    assert not parenchyma[channel() & (r >= BRAIN - 7.5)].any()
    assert not parenchyma[r >= GREY + 0.5].any()  # the fluid layer (and outside the brain)


def test_fluid_at_either_visit_is_fluid() -> None:
    """One visit's protocol leaves signal in the surface fluid (z 0.5, brighter than grey
    matter), the other nulls it: the layer still goes, whichever visit nulls it."""
    nulled, brain = phantom()
    lit, _ = phantom(surface_fluid_z=0.5, seed=1)
    r = radius()
    assert parenchyma_mask([lit], brain).array[(r >= GREY + 0.5) & (r <= BRAIN - 1)].all()
    for visits in ([nulled, lit], [lit, nulled]):
        parenchyma = parenchyma_mask(visits, brain).array > 0
        assert parenchyma[(r <= GREY - 0.5) & ~channel()].all()
        assert not parenchyma[r >= GREY + 0.5].any()


def test_the_depth_rule_drops_a_mark_in_the_surface_fluid_and_keeps_a_periventricular_one() -> None:
    """A 3 mm cube in the fluid layer (centre 33 mm out, reaching 3 mm into the brain mask but not
    into the parenchyma) goes with a 3 mm minimum depth; a cube beside the ventricle stays."""
    image, brain = phantom()
    surface = ((CENTRE + 33.0, CENTRE, CENTRE), 3)
    periventricular = ((CENTRE + 8.0, CENTRE, CENTRE), 3)
    predictor = CubesPredictor([surface, periventricular])
    settings = PostprocessingSettings(threshold=0.5, min_lesion_mm3=3.0, min_depth_mm=3.0)

    _, labels, count = predict_lesions(image, image, brain, predictor, settings)

    assert count == 1
    assert labels.array[CENTRE + 8, CENTRE, CENTRE] == 1
    assert labels.array[CENTRE + 33, CENTRE, CENTRE] == 0
    # Measured from the brain mask's edge instead, the surface mark would have been kept.
    marks = np.zeros(image.shape, np.int32)
    marks[CENTRE + 32 : CENTRE + 35, CENTRE - 1 : CENTRE + 2, CENTRE - 1 : CENTRE + 2] = 1
    assert lesion_depths_mm(marks, 1, brain.array, [1.0, 1.0, 1.0])[0] >= 3.0
