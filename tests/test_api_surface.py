"""The public surface: removing or renaming a public name fails here until this list is edited on purpose."""

import contrastive_landmarks

PUBLIC = {
    "Backbone",
    "CheckpointMismatchError",
    "DEFAULT_STAGES",
    "Hypercolumn",
    "LandmarkModel",
    "LandmarkRegressor",
    "Matches",
    "Preprocessing",
    "PretrainedNotAvailableError",
    "STAGE_NAMES",
    "SpatialProjector",
    "__version__",
    "hypercolumn",
    "list_models",
    "load_backbone",
    "match",
    "match_descriptors",
    "sample_stages",
    "save_pretrained",
    "spatial_contrastive_loss",
}


def test_public_names_exist():
    missing = sorted(n for n in PUBLIC if not hasattr(contrastive_landmarks, n))
    assert not missing, f"public names disappeared: {missing}"


def test_all_lists_exactly_the_public_names():
    assert set(contrastive_landmarks.__all__) == PUBLIC


def test_preprocessing_is_the_backbones_own_class():
    from contrastive_landmarks.preprocessing import Preprocessing

    assert contrastive_landmarks.Preprocessing is Preprocessing
    backbone = contrastive_landmarks.load_backbone("test_resnet")
    assert isinstance(backbone.preprocessing, contrastive_landmarks.Preprocessing)
