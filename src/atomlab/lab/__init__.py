"""The lab end to end: the demo that runs the data spine (docs/demo.md).

::

    from atomlab.lab import StderrProgress, demo_config, run_demo

    result = run_demo(demo_config("small", seed=1, home=home), progress=StderrProgress())
    result.report_path, result.to_dict()

The building blocks are public too: :func:`detect_defects` (defects from an STM image),
:func:`match` (precision and recall against known defects), :class:`ServiceSet` (server
processes in their own process groups).
"""

from atomlab.lab.config import PRESETS, DemoConfig, demo_config
from atomlab.lab.demo import (
    STAGES,
    DemoFailedError,
    DemoResult,
    StageResult,
    create_run_dir,
    run_demo,
)
from atomlab.lab.detection import Detection, DetectionResult, ScanImage, detect_defects
from atomlab.lab.matching import MATCH_TOLERANCE_NM, Located, MatchReport, match
from atomlab.lab.progress import DemoProgress, SilentProgress, StderrProgress
from atomlab.lab.report import SECTION_TITLES
from atomlab.lab.services import Service, ServiceSet
from atomlab.lab.training import StageSkipped

__all__ = [
    "MATCH_TOLERANCE_NM",
    "PRESETS",
    "SECTION_TITLES",
    "STAGES",
    "DemoConfig",
    "DemoFailedError",
    "DemoProgress",
    "DemoResult",
    "Detection",
    "DetectionResult",
    "Located",
    "MatchReport",
    "ScanImage",
    "Service",
    "ServiceSet",
    "SilentProgress",
    "StageResult",
    "StageSkipped",
    "StderrProgress",
    "create_run_dir",
    "demo_config",
    "detect_defects",
    "match",
    "run_demo",
]
