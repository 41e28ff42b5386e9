"""FALCON: explain the features of a vision model's representation in words.

A plain library (no streamlit): ``Falcon`` runs the pipeline, ``FalconSettings`` holds every
constant of the method, ``WorkspaceConfig`` says which models and data to use.
"""

from .errors import FalconError
from .explanation import Explanation
from .settings import FalconSettings
from .workspace import WorkspaceConfig


def __getattr__(name):  # Falcon pulls in torch; import it lazily
    if name == "Falcon":
        from .pipeline import Falcon

        return Falcon
    raise AttributeError(name)


__all__ = ["Falcon", "FalconError", "FalconSettings", "Explanation", "WorkspaceConfig"]
