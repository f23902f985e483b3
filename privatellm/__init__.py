"""privatellm: offline, private question answering over your own documents."""

import os

# Nothing leaves the machine. Models load from local files only, so the Hugging Face libraries
# must never look for a hub (they check for updates of "local" models unless told not to), and
# no library may send telemetry. Set before any of them is imported; a user's own values win.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",  # Chroma (its client settings say so too)
}.items():
    os.environ.setdefault(_key, _value)
