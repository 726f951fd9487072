"""The nnU-Net model: the paper's trainer and the whole chain on a tiny synthetic dataset (the
difference-weighting network's training on it too; its network is tested in test_networks.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blosc2
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from msnewlesions.commands.predict import predict_files
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, read_volume
from msnewlesions.model import nnunet
from msnewlesions.model.trainers import plateau_scheduler
from tests.conftest import run_cli, train_from_chain


def test_plateau_rule_divides_the_learning_rate_by_five_after_30_flat_epochs() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = plateau_scheduler(optimizer)
    # Ten epochs of real progress down to 0.91, then 31 epochs that never beat 0.91 by 0.005
    # (0.004 and 0.0045 below it count as flat: the threshold is absolute).
    history = [1.0 - 0.01 * i for i in range(10)] + [0.906, 0.9055] + [0.906] * 29
    rates = []
    for loss in history:
        scheduler.step(loss)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:40] == pytest.approx([0.01] * 40)  # the 30 flat epochs leave it alone
    assert rates[40] == pytest.approx(0.002)  # the 31st divides it by 5


def test_dataset_has_two_channels_labels_and_patient_folds(chain: dict) -> None:
    dataset = chain["dataset"]
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "baseline", "1": "followup"}
    assert description["labels"] == {"background": 0, "new_lesion": 1}
    assert description["numTraining"] == 3
    labels = sorted(p.name for p in (dataset / "labelsTr").iterdir())
    assert labels == [
        "sub-01_ses-01_ses-02.nii.gz",
        "sub-02_ses-01_ses-02.nii.gz",
        "sub-03_ses-01_ses-02.nii.gz",
    ]
    for label in (dataset / "labelsTr").iterdir():
        assert np.asarray(nib.load(label).dataobj).sum() > 100  # the new lesions came along
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 3  # 3 patients: 3 folds
    # nnU-Net's own integrity check passed: the chain's planning runs it first.


def test_a_checkpoint_saves_the_schedule_a_resume_restores(chain: dict) -> None:
    assert chain["saved_after_first"] == chain["first_schedule"]
    assert chain["first"]["msnewlesions_schedule"] == chain["first_schedule"].as_dict()
    # The resumed run kept the saved schedule but for the longer run asked for.
    second = nnunet.TrainingSchedule.from_dict(chain["second"]["msnewlesions_schedule"])
    assert second == chain["first_schedule"].updated(epochs=3)


def test_resumed_training_continues_epochs_and_optimizer(chain: dict) -> None:
    first, second = chain["first"], chain["second"]
    assert first["current_epoch"] == 2 and second["current_epoch"] == 3
    # Adam's step counter runs on: 2 epochs of one iteration, then one more epoch.
    first_step = float(first["optimizer_state"]["state"][0]["step"])
    second_step = float(second["optimizer_state"]["state"][0]["step"])
    assert (first_step, second_step) == (2.0, 3.0)
    assert second["lr_scheduler_state"]["last_epoch"] == 3


def test_annealing_divides_the_learning_rate_once_for_the_last_epochs(chain: dict) -> None:
    first, second = chain["first"], chain["second"]
    # Run 1: 2 epochs, the last one annealed. Run 2 resumes to 3 epochs with the saved schedule:
    # epoch 2 is also within the last epoch, but the rate was divided already and stays.
    assert first["logging"]["lrs"] == pytest.approx([0.01, 0.002])
    assert second["logging"]["lrs"] == pytest.approx([0.01, 0.002, 0.002])
    assert first["annealed"] and second["annealed"]
    assert second["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.002)
    assert second["trainer_name"] == nnunet.TRAINER


def test_a_resumed_run_continues_at_the_learning_rate_asked_for(chain: dict) -> None:
    third = chain["third"]
    # Epochs 0-2 as before (0.01, then 0.002 after annealing); epoch 3 at the rate asked for.
    assert third["logging"]["lrs"] == pytest.approx([0.01, 0.002, 0.002, 0.0004])
    assert third["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.0004)
    # The same optimizer goes on (Adam's steps 3 -> 4), and the rate is not part of the schedule
    # that later resumes re-apply: it lives in the checkpoint's optimizer state.
    assert float(third["optimizer_state"]["state"][0]["step"]) == 4.0
    schedule = third["msnewlesions_schedule"]
    assert "learning_rate" not in schedule and schedule["epochs"] == 4


def test_a_new_learning_rate_starts_a_phase_whose_last_epochs_are_annealed_again(
    chain: dict,
) -> None:
    fourth = chain["fourth"]
    # The earlier phases were annealed already (the checkpoint says so); a new rate with an
    # anneal of its own still ends at its fifth: epoch 4 at 0.001, the last one (5) at 0.0002.
    assert fourth["logging"]["lrs"][4:] == pytest.approx([0.001, 0.0002])
    assert fourth["annealed"] and fourth["current_epoch"] == 6


def test_train_refuses_a_learning_rate_of_zero_before_touching_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset, work = tmp_path / "raw" / "Dataset510_MSNewLesions", tmp_path / "nnunet"
    argv = ["train", "--dataset", str(dataset), "--fold", "0", "--work", str(work)]
    code, _, err = run_cli([*argv, "--learning-rate", "0"], capsys)
    assert code == 1 and "--learning-rate must be above 0" in err
    assert not work.exists()  # nothing planned or written


def test_a_new_run_starts_from_every_weight_it_is_given(chain: dict, tmp_path: Path) -> None:
    fold = train_from_chain(chain, tmp_path / "results")
    started = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # A new run (epoch 0 -> 1 of 2 iterations) with a new optimizer (2 steps, not the source's 6)...
    assert started["current_epoch"] == 1
    assert float(started["optimizer_state"]["state"][0]["step"]) == 2.0
    # ...whose network is the given one, output layers included (nnU-Net's own pretrained-weights
    # loader leaves those random).
    weights, source = started["network_weights"], chain["fourth"]["network_weights"]
    assert weights.keys() == source.keys()
    assert any(".seg_layers." in key for key in weights)
    for key, value in weights.items():
        torch.testing.assert_close(value, source[key], atol=1e-6, rtol=0)


def test_weights_of_another_network_are_refused(chain: dict, tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"network_weights": {"encoder.weight": torch.zeros(3)}}, other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    preprocessed = chain["fold"].parents[3] / "preprocessed"
    expected = {
        other: "does not hold weights of this dataset's",
        garbage: "not a readable checkpoint",
    }
    for weights, message in expected.items():
        with pytest.raises(MSNewLesionsError, match=message):
            nnunet.train(
                preprocessed,
                tmp_path / "results",
                502,
                0,
                "cpu",
                schedule=nnunet.TrainingSchedule(epochs=1),
                initial_weights=weights,
            )


def test_train_refuses_initial_weights_with_resume_or_without_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset, work = tmp_path / "raw" / "Dataset510_MSNewLesions", tmp_path / "nnunet"
    weights = tmp_path / "checkpoint_final.pth"
    argv = ["train", "--dataset", str(dataset), "--fold", "0", "--work", str(work)]
    code, _, err = run_cli([*argv, "--initial-weights", str(weights)], capsys)
    assert code == 1 and "is not a checkpoint file" in err
    weights.write_bytes(b"")
    code, _, err = run_cli([*argv, "--initial-weights", str(weights), "--resume"], capsys)
    assert code == 1 and "give only one of them" in err
    assert not work.exists()  # nothing planned or written


def test_the_run_records_the_papers_optimizer_and_checkpointing(chain: dict) -> None:
    debug = chain["first_debug"]
    assert "Adam" in debug["optimizer"] and "ReduceLROnPlateau" in debug["lr_scheduler"]
    assert float(debug["initial_lr"]) == 0.01
    assert int(debug["save_every"]) == 25
    assert int(debug["num_epochs"]) == 2  # this short run's override, recorded as such
    assert chain["first"]["init_args"]["configuration"] == "3d_fullres"


def test_the_trainer_defaults_are_the_papers(chain: dict) -> None:
    from nnunetv2.run.run_training import get_trainer_from_args

    preprocessed = chain["fold"].parents[3] / "preprocessed"
    with nnunet.nnunet_environment(preprocessed=preprocessed, results=chain["fold"].parents[3]):
        trainer = get_trainer_from_args(
            "502", "3d_fullres", 0, nnunet.TRAINER, "nnUNetPlans_cpu", device=torch.device("cpu")
        )
        trainer.initialize()
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.save_every) == (
        300,
        250,
        25,
    )
    assert isinstance(trainer.optimizer, torch.optim.Adam) and trainer.initial_lr == 0.01
    scheduler = trainer.lr_scheduler
    assert (scheduler.factor, scheduler.patience, scheduler.threshold) == (0.2, 30, 0.005)
    assert scheduler.threshold_mode == "abs"
    arch = trainer.configuration_manager.network_arch_init_kwargs
    assert arch["features_per_stage"] == [16, 32, 64, 128, 256]
    assert trainer.configuration_manager.patch_size == [64, 64, 64]
    # The loss gives no reward for marking nothing: a batch of one empty patch and one with a
    # lesion, predicted all background with confidence, scores no Dice. (Per-patch Dice scores it
    # -0.5, and a cpu model trained so on the synthetic pairs learned to mark nothing at all.)
    dice = trainer.loss.loss.dc
    logits = torch.zeros((2, 2, 8, 8, 8))
    logits[:, 0] = 30.0
    target = torch.zeros((2, 1, 8, 8, 8))
    target[1, 0, 2:5, 2:5, 2:5] = 1
    assert float(dice(logits, target)) > -0.01


def test_the_prediction_has_the_inputs_geometry(chain: dict) -> None:
    prediction, source = nib.load(chain["prediction"]), nib.load(chain["input"])
    assert prediction.shape == source.shape
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1}


def test_a_model_with_the_wrong_number_of_channels_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plans.json").write_text("{}")
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"}}))
    argv = [
        "predict",
        "--model",
        str(tmp_path),
        "--input",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "-q",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and "takes 1 input channel(s)" in err
    code, _, err = run_cli(
        [
            "predict",
            "--model",
            str(tmp_path / "none"),
            "--input",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
        capsys,
    )
    assert code == 1 and "does not exist" in err


def test_an_exported_model_imports_and_predicts_the_same(chain: dict, tmp_path: Path) -> None:
    model = chain["fold"].parent
    archive = nnunet.export_model(model, tmp_path / "model.zip")
    imported = nnunet.import_model(archive, tmp_path / "models")
    assert imported == tmp_path / "models" / model.parent.name / model.name
    stripped = torch.load(imported / "fold_0/checkpoint_final.pth", weights_only=False)
    assert stripped["optimizer_state"] is None
    inputs = chain["input"].parent
    predict_files(archive, inputs, tmp_path / "from_zip")  # a zip works as --model too
    original = np.asarray(nib.load(chain["prediction"]).dataobj)
    again = np.asarray(nib.load(tmp_path / "from_zip" / chain["prediction"].name).dataobj)
    np.testing.assert_array_equal(again, original)


def test_the_model_folder_sets_the_sliding_window_step(tmp_path: Path) -> None:
    from msnewlesions.model.default import DEFAULT_MODEL

    model = tmp_path / "model"  # the shipped network alone, at nnU-Net's default step
    nnunet.copy_model(DEFAULT_MODEL, model)
    for fold in model.glob("fold_*"):
        if fold.name != "fold_0":
            shutil.rmtree(fold)
    (model / "inference.json").unlink(missing_ok=True)
    plain = nnunet.NewLesionPredictor(model)
    (model / "inference.json").write_text(json.dumps({"tile_step_size": 0.6}))
    rng = np.random.default_rng(0)
    pair = [Volume(rng.normal(size=(100, 64, 64)).astype(np.float32), np.eye(4)) for _ in "ab"]

    def windows(predictor: nnunet.NewLesionPredictor) -> int:
        """How many 64^3 windows the network saw (one fold: one pass per window)."""
        calls = []
        network = predictor._predictor.network
        hook = network.register_forward_hook(lambda *_: calls.append(1))
        predictor.probability(*pair)
        hook.remove()
        return len(calls)

    # Along 100 voxels a 64-voxel patch at step 0.5 (32 voxels) needs 3 windows (0, 18, 36),
    # at step 0.6 (38.4 voxels) 2 (0, 36); along 64 voxels, one.
    assert plain.tile_step_size == 0.5 and windows(plain) == 3
    from_folder = nnunet.NewLesionPredictor(model)
    assert from_folder.tile_step_size == 0.6 and windows(from_folder) == 2
    assert windows(nnunet.NewLesionPredictor(model, tile_step_size=0.5)) == 3  # caller wins
    # Two folds (an ensemble): every window through each, and the mean of their probabilities
    # (two copies of one network: the same map as one).
    shutil.copytree(model / "fold_0", model / "fold_1")
    ensemble = nnunet.NewLesionPredictor(model)
    assert windows(ensemble) == 4
    np.testing.assert_allclose(
        ensemble.probability(*pair).array, from_folder.probability(*pair).array, atol=1e-6
    )
    archive = nnunet.export_model(model, tmp_path / "model.zip")  # the setting travels
    assert nnunet.NewLesionPredictor(archive).tile_step_size == 0.6
    (model / "inference.json").write_text(json.dumps({"tile_step_size": 1.5}))
    with pytest.raises(MSNewLesionsError, match="tile step must be in"):
        nnunet.NewLesionPredictor(model)
    (model / "inference.json").write_text("{}")
    with pytest.raises(MSNewLesionsError, match="not a valid inference file"):
        nnunet.NewLesionPredictor(model)


def test_trainers_are_found_by_name_ours_directly_others_by_nnunets_search() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from msnewlesions.model import trainers
    from msnewlesions.model.nnunet.prediction import trainer_class_by_name

    for name in trainers.__all__:
        if name.startswith("nnUNetTrainer"):
            assert trainer_class_by_name(name, "m") is getattr(trainers, name)
    assert trainer_class_by_name("nnUNetTrainer", "m") is nnUNetTrainer
    variant = trainer_class_by_name("nnUNetTrainer_5epochs", "m")  # found in nnU-Net's tree
    assert variant.__name__ == "nnUNetTrainer_5epochs" and issubclass(variant, nnUNetTrainer)
    with pytest.raises(MSNewLesionsError, match="neither nnU-Net's nor ours"):
        trainer_class_by_name("nnUNetTrainerThatNobodyWrote", "m")
    with pytest.raises(MSNewLesionsError, match="neither"):
        trainer_class_by_name("plateau_scheduler", "m")  # ours, but not a trainer


def test_mirroring_along_one_axis_makes_the_prediction_symmetric_along_that_axis() -> None:
    from msnewlesions.model.default import DEFAULT_MODEL

    # One 64^3 tile (the shipped plans' patch) of smooth z-scored texture, a bright blob at the
    # follow-up: any input will do, the property is the network's.
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=(2, 64, 64, 64)), (0, 2, 2, 2))
    texture = (texture / texture.std()).astype(np.float32)
    texture[1, 20:27, 30:36, 28:33] += 3.0
    baseline, followup = (Volume(texture[i], np.eye(4)) for i in (0, 1))

    def asymmetry(predictor: nnunet.NewLesionPredictor, axis: int) -> float:
        """How far the prediction of the mirrored pair is from the mirrored prediction."""
        direct = predictor.probability(baseline, followup).array
        flip = lambda v: v.with_array(np.ascontiguousarray(np.flip(v.array, axis)))  # noqa: E731
        mirrored = np.flip(predictor.probability(flip(baseline), flip(followup)).array, axis)
        return float(np.abs(direct - mirrored).max())

    plain = nnunet.NewLesionPredictor(DEFAULT_MODEL)
    left_right = nnunet.NewLesionPredictor(
        DEFAULT_MODEL, test_time_augmentation=True, mirror_axes=[0]
    )
    # A network is far from symmetric by itself (the blob's edge moves by whole voxels: up to
    # 1.0 apart); the average of both passes is symmetric along the mirrored axis up to what
    # nnU-Net's pipeline adds (0.008 measured), and only along that axis.
    assert asymmetry(plain, 0) > 0.5 and asymmetry(plain, 1) > 0.5
    assert asymmetry(left_right, 0) < 0.03
    assert asymmetry(left_right, 1) > 0.5
    with pytest.raises(ValueError, match="mirror axes"):
        nnunet.NewLesionPredictor(DEFAULT_MODEL, test_time_augmentation=True, mirror_axes=[3])


def test_nnunets_own_installer_reads_our_zip(chain: dict, tmp_path: Path) -> None:
    from nnunetv2.model_sharing.model_import import install_model_from_zip_file

    archive = nnunet.export_model(chain["fold"].parent, tmp_path / "model.zip")
    with nnunet.nnunet_environment(results=tmp_path / "results"):
        install_model_from_zip_file(str(archive))
    installed = tmp_path / "results" / nnunet.dataset_name(502)
    assert (installed / chain["fold"].parent.name / "fold_0" / "checkpoint_final.pth").exists()


def test_a_bad_archive_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.zip").write_text("not a zip")
    code, _, err = run_cli(
        ["model", "import", "--zip", str(tmp_path / "model.zip"), "--out", str(tmp_path / "m")],
        capsys,
    )
    assert code == 1 and "not a zip archive" in err


@pytest.mark.slow  # about 2 minutes: nnU-Net's 50 validation iterations and full validation
def test_train_command_trains_a_fold_and_validates_it(
    chain: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line reuses the chain's plans and ends with nnU-Net's validation."""
    work = chain["fold"].parents[3]
    argv = ["train", "--dataset", str(chain["dataset"]), "--fold", "1", "--work", str(work)]
    code, out, _ = run_cli([*argv, "--epochs", "1", "--iterations", "2", "-q"], capsys)
    assert code == 0, out
    fold = chain["fold"].parent / "fold_1"
    assert (fold / "checkpoint_final.pth").exists()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert "foreground_mean" in summary


def test_cases_added_to_the_raw_dataset_are_preprocessed_with_the_same_plans(
    chain: dict, tmp_path: Path
) -> None:
    name = nnunet.dataset_name(502)
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    shutil.copytree(chain["dataset"], raw / name)
    shutil.copytree(chain["dataset"].parent.parent / "preprocessed" / name, preprocessed / name)
    plans = (preprocessed / name / "nnUNetPlans.json").read_bytes()
    data = preprocessed / name / "nnUNetPlans_3d_fullres"
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}

    # A fourth case: the first case's images under a new name, added to fold 0's training side.
    source = "sub-01_ses-01_ses-02"
    for channel in ("0000", "0001"):
        shutil.copy(
            raw / name / "imagesTr" / f"{source}_{channel}.nii.gz",
            raw / name / "imagesTr" / f"grown_{channel}.nii.gz",
        )
    shutil.copy(
        raw / name / "labelsTr" / f"{source}.nii.gz", raw / name / "labelsTr" / "grown.nii.gz"
    )
    splits = json.loads((raw / name / "splits_final.json").read_text())
    splits[0]["train"].append("grown")
    (raw / name / "splits_final.json").write_text(json.dumps(splits))

    assert nnunet.preprocess_new_cases(raw, preprocessed, 502) == ["grown"]
    # The same images give the same network input and target as the original preprocessing did.
    for suffix in ("", "_seg"):
        new = blosc2.open(str(data / f"grown{suffix}.b2nd"), mode="r")[:]
        old = blosc2.open(str(data / f"{source}{suffix}.b2nd"), mode="r")[:]
        np.testing.assert_array_equal(new, old)
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir() if p.name in before} == before
    assert (preprocessed / name / "nnUNetPlans.json").read_bytes() == plans
    copied = json.loads((preprocessed / name / "splits_final.json").read_text())
    assert "grown" in copied[0]["train"]
    assert (preprocessed / name / "gt_segmentations" / "grown.nii.gz").exists()
    assert nnunet.preprocess_new_cases(raw, preprocessed, 502) == []


def test_resuming_continues_from_the_furthest_trained_checkpoint(
    chain: dict, tmp_path: Path
) -> None:
    assert nnunet.resume_checkpoint(tmp_path) is None  # nothing to resume from
    torch.save(chain["first"], tmp_path / "checkpoint_best.pth")
    assert nnunet.resume_checkpoint(tmp_path) == tmp_path / "checkpoint_best.pth"
    # A run to epoch 2 finished, was extended and stopped after epoch 3: the latest one is newer
    # than the final one, which nnU-Net's own rule would take.
    torch.save(chain["first"], tmp_path / "checkpoint_final.pth")
    torch.save(chain["second"], tmp_path / "checkpoint_latest.pth")
    assert nnunet.resume_checkpoint(tmp_path) == tmp_path / "checkpoint_latest.pth"
    torch.save(chain["second"], tmp_path / "checkpoint_final.pth")  # the extended run finished
    assert nnunet.resume_checkpoint(tmp_path) == tmp_path / "checkpoint_final.pth"


@pytest.mark.slow  # a network the shipped model does not use (test_networks.py tests it)
def test_the_trainer_trains_from_a_concatenation_model_and_predicts(
    chain: dict, tmp_path: Path
) -> None:
    """nnU-Net builds our network through the trainer, starts it from the chain's two-channel
    weights, trains an epoch, and its predictor finds the trainer again to predict. Here, not in
    test_networks.py, so that a parallel `make test` builds the chain once (--dist loadfile)."""
    fold = train_from_chain(chain, tmp_path / "results", network="difference-weighting")
    assert fold.parent.name.startswith("nnUNetTrainerMSNewLesionsDifferenceWeighting__")
    saved = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights, source = saved["network_weights"], chain["fourth"]["network_weights"]
    assert any(key.startswith("weighting.") for key in weights)
    first = "encoder.stages.0.0.convs.0.conv.weight"
    torch.testing.assert_close(
        weights[first], source[first].sum(1, keepdim=True), atol=1e-6, rtol=0
    )
    predict_files(fold.parent, chain["input"].parent, tmp_path / "predictions")
    prediction = tmp_path / "predictions" / chain["prediction"].name
    assert read_volume(prediction).shape == read_volume(chain["input"]).shape
    assert set(np.unique(read_volume(prediction).array)) <= {0, 1}
