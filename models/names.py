"""The model names a user may choose, without torch: the command line's help and the settings read them
(`backdrop --help` imports no torch); `models.zoo` builds its registry on them and adds the files it loaded
(`ModelRegistry.choices()`)."""

from __future__ import annotations

# Short names of the built-in models, as the page shows them.
ALIASES = {"general": "mediapipe-general", "landscape": "mediapipe-landscape", "fullbody": "mediapipe-pose"}
# Names that pick networks by the scene (models.zoo.POLICIES describes each).
POLICY_NAMES = ("auto",)
# What a session may name besides a loaded file, in the page's order.
MODEL_CHOICES: tuple[str, ...] = (*ALIASES, *POLICY_NAMES)
# For help texts: "general, landscape, fullbody, auto".
MODEL_CHOICES_TEXT = ", ".join(MODEL_CHOICES)
