"""The one way a module states its constructor arguments: ``config`` (for ``config.json``) and ``extra_repr``."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["Configurable"]


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class Configurable:
    """Mixin giving :attr:`config` and :meth:`extra_repr` from :attr:`config_fields`.

    Each name in ``config_fields`` is a constructor argument kept as an attribute of the same name, so
    ``type(m)(**m.config)`` rebuilds a head (modules with other arguments, such as a backbone, take those
    besides). ``config`` is JSON-serialisable (tuples become lists); ``extra_repr`` lists the same fields.

    >>> from contrastive_landmarks import SpatialProjector
    >>> SpatialProjector(960, dim=16, size=8).config["size"]
    [8, 8]
    """

    config_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def config(self) -> dict:
        """JSON-serialisable constructor arguments."""
        return {name: _json(getattr(self, name)) for name in self.config_fields}

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.config_fields)
