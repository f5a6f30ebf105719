"""monai-mri-gan: GANs for brain MRI slices, MONAI style."""

from .errors import DataError
from .version import __version__

__all__ = ["DataError", "__version__"]
