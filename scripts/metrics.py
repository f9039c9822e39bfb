"""The evaluation figures, from the package (acne.metrics), for the scripts that import them by this name."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the scripts run from a checkout

from acne.metrics import classification_figures, dice_iou, hayashi_band, match_lesions, prf  # noqa: E402,F401
