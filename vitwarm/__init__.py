"""vitwarm: procedural warm-up of vision transformers.

Importing the package registers vitwarm's timm models (``timm.list_models("vitwarm_*")``) and nothing else.
"""

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers vitwarm_* timm models)
