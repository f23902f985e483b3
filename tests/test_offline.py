"""Offline proof: ingest, ask, serve and the page, each run inside a network namespace with no
network at all (`unshare -n`, loopback only), with none of the *_OFFLINE variables set by the
caller. Any attempt to reach the network would fail there and show in the logs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLES

SCRIPT = r"""
set -euo pipefail
ip link set lo up
trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT  # a failed step stops the servers too
privatellm() { "$PY" -m privatellm --data-dir "$DATA" "$@"; }
wait_for() {  # URL: until it answers, at most 180 s
    for _ in $(seq 1 360); do
        "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" \
            2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}
"$PY" -c "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)" 2>/dev/null \
    && { echo "the namespace has a network"; exit 3; }

privatellm ingest "$SAMPLES" > "$LOGS/ingest.log" 2>&1
privatellm ask --json "Who started the llama.cpp project?" > "$LOGS/ask.json" 2> "$LOGS/ask.log"

# the server itself, not the shell function: `kill $!` would stop only the subshell running it
"$PY" -m privatellm --data-dir "$DATA" serve --port 8001 > "$LOGS/serve.log" 2>&1 &
SERVE=$!
wait_for http://127.0.0.1:8001/health
"$PY" - > "$LOGS/chat.json" <<'PY'
import json, urllib.request
body = json.dumps({"messages": [{"role": "user", "content": "Who started the llama.cpp project?"}],
                   "use_context": True}).encode()
request = urllib.request.Request("http://127.0.0.1:8001/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
print(urllib.request.urlopen(request, timeout=600).read().decode())
PY
kill $SERVE; wait $SERVE || true

PRIVATELLM_DATA_DIR="$DATA" "$PY" -m streamlit run "$REPO/ui/app.py" --server.port 8501 \
    --server.headless true --browser.gatherUsageStats false > "$LOGS/ui.log" 2>&1 &
UI=$!
wait_for http://127.0.0.1:8501/_stcore/health
"$PY" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8501/').read().decode())" \
    > "$LOGS/ui.html"
kill $UI; wait $UI || true
PRIVATELLM_DATA_DIR="$DATA" "$PY" - > "$LOGS/page.txt" 2> "$LOGS/page.log" <<'PY'
import os
from streamlit.testing.v1 import AppTest
page = AppTest.from_file(os.environ["REPO"] + "/ui/app.py", default_timeout=600).run()
page.chat_input[0].set_value("Who started the llama.cpp project?").run()
answer = page.chat_message[-1]
print(answer.markdown[0].value)
print([e.label for e in answer.expander])
PY
echo done
"""
NETWORK_TRACES = (
    "huggingface.co",
    "Network is unreachable",
    "MaxRetryError",
    "posthog",
    "[Errno 101]",
)


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespace_works(), reason="cannot create a network namespace here")
def test_everything_runs_with_no_network(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ANONYMIZED_TELEMETRY")
        and not k.startswith("PRIVATELLM_")
    }
    env |= {
        "PY": sys.executable,
        "DATA": str(tmp_path / "data"),
        "LOGS": str(logs),
        "SAMPLES": str(SAMPLES),
        "REPO": str(REPO),
    }
    with subprocess.Popen(
        ["unshare", "-n", "bash", "-c", SCRIPT],
        cwd=tmp_path,  # not the repository: .streamlit/config.toml must not be what saves us
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as script:
        try:
            stdout, stderr = script.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)  # the script and the servers it started
            raise
    details = {p.name: p.read_text(errors="replace")[-2000:] for p in logs.iterdir()}
    assert script.returncode == 0 and stdout.strip().endswith("done"), (stderr, details)
    ask = (logs / "ask.json").read_text()
    assert "Gerganov" in ask and "llama-history.pdf" in ask
    chat = (logs / "chat.json").read_text()
    assert "Gerganov" in chat and '"page_label":"3"' in chat
    assert "<html" in (logs / "ui.html").read_text().lower()
    page = (logs / "page.txt").read_text()
    assert "Gerganov" in page and "llama-history.pdf, p. 3" in page
    for name, text in details.items():
        for trace in NETWORK_TRACES:
            assert trace not in text, f"{name} shows a network attempt: {trace}"
