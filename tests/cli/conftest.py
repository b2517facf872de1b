"""Fixtures of the command-line tests."""

import pytest


@pytest.fixture
def content_checks(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of the images whose content is checked, in order: ``check.content_problem`` counted wherever
    it is called (predict's own check, and the one ``detect`` would run)."""
    from contrastive_landmarks import check, pipeline

    checked, content_problem = [], check.content_problem

    def counted(image):
        checked.append(tuple(image.shape))
        return content_problem(image)

    for module in (check, pipeline):
        monkeypatch.setattr(module, "content_problem", counted)
    return checked
