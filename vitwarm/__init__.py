"""vitwarm: procedural warm-up of vision transformers.

Importing the package registers vitwarm's timm models (``timm.list_models("vitwarm_*")``) and nothing else.
"""

__version__ = "0.1.0"
