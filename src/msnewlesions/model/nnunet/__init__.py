"""The one adapter to nnU-Net (nnunetv2 >= 2.8), split by concern.

* :mod:`.environment`: nnU-Net's names and folder variables, set per call, never exported;
* :mod:`.planning`: raw dataset -> ``dataset.json``, integrity check, plans (``paper``, ``cpu``),
  preprocessing, cases added later;
* :mod:`.training`: one fold with the paper's trainer, resumed or from given weights;
* :mod:`.prediction`: :class:`NewLesionPredictor`, one pair at a time in process;
* :mod:`.archives`: model folders and zips (check, copy, export, import, open).

Nothing outside this package imports nnunetv2.
"""

from msnewlesions.model.nnunet.archives import (
    check_model,
    copy_model,
    export_model,
    import_model,
    load_checkpoint,
    open_model,
    strip_checkpoint,
)
from msnewlesions.model.nnunet.environment import (
    CHANNEL_NAMES,
    CONFIGURATION,
    LABELS,
    PLANS,
    TRAINER,
    TRAINERS,
    Config,
    Network,
    dataset_id_of,
    dataset_name,
    nnunet_environment,
)
from msnewlesions.model.nnunet.planning import (
    CPU_BATCH_SIZE,
    CPU_FEATURES,
    CPU_PATCH_SIZE,
    cpu_plans,
    plan_and_preprocess,
    prepare_for_training,
    preprocess_new_cases,
    verify_dataset,
    write_dataset_json,
)
from msnewlesions.model.nnunet.prediction import NewLesionPredictor
from msnewlesions.model.nnunet.training import (
    check_initial_weights,
    model_folder,
    resume_checkpoint,
    saved_schedule,
    schedule_for,
    train,
)
from msnewlesions.model.schedule import TrainingSchedule

__all__ = [
    "CHANNEL_NAMES",
    "CONFIGURATION",
    "CPU_BATCH_SIZE",
    "CPU_FEATURES",
    "CPU_PATCH_SIZE",
    "LABELS",
    "PLANS",
    "TRAINER",
    "TRAINERS",
    "Config",
    "Network",
    "NewLesionPredictor",
    "TrainingSchedule",
    "check_initial_weights",
    "check_model",
    "copy_model",
    "cpu_plans",
    "dataset_id_of",
    "dataset_name",
    "export_model",
    "import_model",
    "load_checkpoint",
    "model_folder",
    "nnunet_environment",
    "open_model",
    "plan_and_preprocess",
    "prepare_for_training",
    "preprocess_new_cases",
    "resume_checkpoint",
    "saved_schedule",
    "schedule_for",
    "strip_checkpoint",
    "train",
    "verify_dataset",
    "write_dataset_json",
]
