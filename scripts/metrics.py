"""The evaluation figures, from the package (acne.metrics), for the scripts that import them by this name."""
from acne.metrics import *  # noqa: F401,F403
from acne.metrics import classification_figures, dice_iou, hayashi_band, match_lesions, prf  # noqa: F401
