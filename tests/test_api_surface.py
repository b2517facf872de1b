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
