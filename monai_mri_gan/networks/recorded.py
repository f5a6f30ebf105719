"""Networks that remember how they were built, so a run record can rebuild them from a checkpoint alone."""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["RecordsArguments"]


class RecordsArguments:
    """Mixin: keep the constructor's arguments, defaults applied, as ``self.init_args``.

    The run record (:mod:`monai_mri_gan.runs`) stores ``init_args`` beside the weights, so evaluation, synthesis and
    export rebuild a network from the object's own arguments, never from a restated copy in a config. A constructor
    that resolves a default (``None`` meaning "a size-dependent width") writes the resolved value back into
    ``init_args``, so a later change of the default cannot change what an old checkpoint rebuilds.

    Only the outermost constructor of a subclass chain records, so ``init_args`` names the class that was built.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if "init_args" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop(next(iter(signature.parameters)))  # self
                self.__dict__["init_args"] = arguments
            init(self, *args, **kw)

        cls.__init__ = recording_init
